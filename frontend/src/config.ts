/**
 * Where the UI finds the CMK API and the OIDC issuer.
 *
 * Locally (`openkcm local up`) the API, the issuer (/oidc) and this app share one origin, so the
 * defaults need nothing. For S3/CloudFront the build sets VITE_API_BASE, VITE_OIDC_ISSUER and
 * VITE_OIDC_CLIENT_ID (see README). Build-time values keep index.html free of inline scripts.
 */
export interface UiConfig {
  apiBase: string;
  issuer: string;
  clientId: string;
  redirectUri: string;
  /** host:port MongoDB's kms_providers.kmip.endpoint names (integration guide). */
  kmipEndpoint: string;
}

function trimSlash(value: string): string {
  return value.replace(/\/+$/, "");
}

export function loadConfig(origin: string = window.location.origin): UiConfig {
  const env = import.meta.env;
  const apiBase = trimSlash(env.VITE_API_BASE || origin);
  return {
    apiBase,
    issuer: trimSlash(env.VITE_OIDC_ISSUER || `${apiBase}/oidc`),
    clientId: env.VITE_OIDC_CLIENT_ID || "openkcm-ui",
    redirectUri: `${origin}/callback`,
    kmipEndpoint: env.VITE_KMIP_ENDPOINT || `${new URL(apiBase).hostname}:5696`,
  };
}
