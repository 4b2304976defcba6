/**
 * The signed-in session. The access token lives in memory and in sessionStorage (this tab only,
 * gone when the tab closes) — never in localStorage. Claims are decoded for display and routing
 * only; the API verifies the signature on every call.
 */

export type Role = "account-admin" | "key-admin" | "auditor" | "platform-operator";

export interface Claims {
  sub: string;
  exp?: number;
  account?: string;
  roles: Role[];
  amr: string[];
  /** A second factor, as the API decides it (openkcm/api/auth.py): "mfa" in `amr`, or `openkcm:mfa` = "true". */
  mfa: boolean;
}

export interface Session {
  accessToken: string;
  claims: Claims;
}

const KEY = "openkcm.session";
let current: Session | null = null;

function decodeSegment(segment: string): unknown {
  const padded = segment.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(segment.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

export function decodeClaims(token: string): Claims {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("The issuer returned a token that is not a JWT.");
  const raw = decodeSegment(parts[1]) as Record<string, unknown>;
  const roles = Array.isArray(raw["openkcm:roles"]) ? (raw["openkcm:roles"] as Role[]) : [];
  const amr = Array.isArray(raw.amr) ? (raw.amr as string[]) : [];
  // Cognito reserves `amr`, so its pre-token trigger states MFA as `openkcm:mfa` = "true" (infra_cdk/pretoken).
  // Same rule as the API's str(value).lower() == "true": the string in any case, or a JSON true.
  const flag = raw["openkcm:mfa"];
  const mfa = amr.includes("mfa") || flag === true || (typeof flag === "string" && flag.toLowerCase() === "true");
  return {
    sub: String(raw.sub ?? ""),
    exp: typeof raw.exp === "number" ? raw.exp : undefined,
    account: typeof raw["openkcm:account"] === "string" ? (raw["openkcm:account"] as string) : undefined,
    roles,
    amr,
    mfa,
  };
}

export function isExpired(claims: Claims, nowSeconds = Date.now() / 1000): boolean {
  return claims.exp !== undefined && claims.exp <= nowSeconds + 5;
}

export function getSession(): Session | null {
  if (current && !isExpired(current.claims)) return current;
  const stored = sessionStorage.getItem(KEY);
  if (!stored) return null;
  try {
    const token = JSON.parse(stored).accessToken as string;
    const claims = decodeClaims(token);
    if (isExpired(claims)) {
      clearSession();
      return null;
    }
    current = { accessToken: token, claims };
    return current;
  } catch {
    clearSession();
    return null;
  }
}

export function setSession(accessToken: string): Session {
  const claims = decodeClaims(accessToken);
  current = { accessToken, claims };
  sessionStorage.setItem(KEY, JSON.stringify({ accessToken }));
  return current;
}

export function clearSession(): void {
  current = null;
  sessionStorage.removeItem(KEY);
}

export function hasRole(session: Session | null, ...roles: Role[]): boolean {
  return !!session && session.claims.roles.some((r) => roles.includes(r));
}
