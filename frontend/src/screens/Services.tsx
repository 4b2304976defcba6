import { useState } from "react";
import type { CmkApi } from "../api/client";
import type { Certificate } from "../api/types";
import { ErrorMessage, Loading, Progress, Section, StateBadge } from "../components/common";
import { download, formatTime } from "../lib/format";
import { useAction, useAsync } from "../lib/useAsync";
import { validateCsr, validateServiceId } from "../lib/validation";

export function Services({ api, tenant, kmipEndpoint }: { api: CmkApi; tenant: string; kmipEndpoint?: string }) {
  const certs = useAsync(() => api.certificates(tenant), [api, tenant]);
  const dash = useAsync(() => api.dashboard(tenant), [api, tenant]);
  return (
    <div className="grid">
      <IssueCertificate api={api} tenant={tenant} onIssued={certs.reload} />
      <Section title="Certificates" actions={<CaBundleButton api={api} />}>
        {certs.loading && !certs.data && <Loading />}
        <ErrorMessage error={certs.error} />
        {certs.data && <CertificateTable api={api} tenant={tenant} items={certs.data.items} onChange={certs.reload} />}
      </Section>
      <IntegrationGuide tenant={tenant} endpoint={dash.data?.kmip_endpoint ?? kmipEndpoint} />
    </div>
  );
}

function IssueCertificate({ api, tenant, onIssued }: { api: CmkApi; tenant: string; onIssued: () => void }) {
  const [serviceId, setServiceId] = useState("");
  const [csr, setCsr] = useState("");
  const [errors, setErrors] = useState<{ service?: string | null; csr?: string | null }>({});
  const [issued, setIssued] = useState<Certificate>();
  const action = useAction();
  const submit = async () => {
    const found = { service: validateServiceId(serviceId), csr: validateCsr(csr) };
    setErrors(found);
    if (found.service || found.csr) return;
    setIssued(undefined);
    const cert = await action.run(() => api.issueCertificate(tenant, { service_id: serviceId, csr: csr.trim() + "\n", validity_days: 365 }));
    if (cert) {
      setIssued(cert);
      setCsr("");
      onIssued();
    }
  };
  return (
    <Section title="Issue a client certificate">
      <p className="muted">
        Create the key pair and CSR on the service's host (the private key never leaves it), e.g.{" "}
        <code>openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key -subj "/CN=mongodb-prod"</code>
      </p>
      <form noValidate onSubmit={(e) => { e.preventDefault(); submit(); }}>
        <div className="field">
          <label htmlFor="service-id">Service id</label>
          <input id="service-id" value={serviceId} onChange={(e) => setServiceId(e.target.value)} aria-invalid={errors.service ? true : undefined}
            aria-describedby="service-id-err" placeholder="mongodb-prod" autoComplete="off" />
          <small id="service-id-err" className="field-error">{errors.service}</small>
        </div>
        <div className="field">
          <label htmlFor="csr">Certificate signing request (PEM)</label>
          <textarea id="csr" rows={8} value={csr} onChange={(e) => setCsr(e.target.value)} aria-invalid={errors.csr ? true : undefined}
            aria-describedby="csr-err" spellCheck={false} placeholder="-----BEGIN CERTIFICATE REQUEST-----" />
          <small id="csr-err" className="field-error">{errors.csr}</small>
        </div>
        <button type="submit" className="primary" disabled={action.busy}>{action.busy ? "Issuing…" : "Issue certificate"}</button>
      </form>
      {action.busy && <Progress label="Issuing the certificate" />}
      <ErrorMessage error={action.error} />
      {issued && (
        <div role="status" className="issued">
          <p className="ok-text">
            Certificate <code>{issued.serial}</code> issued for <strong>{issued.service_id}</strong>
            {issued.spiffe_id && <> (<code>{issued.spiffe_id}</code>)</>}.
          </p>
          {issued.certificate_pem && (
            <button type="button" onClick={() => download(`${issued.service_id}.pem`, issued.certificate_pem!, "application/x-pem-file")}>
              Download certificate
            </button>
          )}
        </div>
      )}
    </Section>
  );
}

function CaBundleButton({ api }: { api: CmkApi }) {
  const action = useAction();
  const get = async () => {
    const bundle = await action.run(() => api.caBundle());
    if (bundle) download("openkcm-ca.pem", bundle.ca_pem, "application/x-pem-file");
  };
  return (
    <span>
      <button type="button" onClick={get} disabled={action.busy}>Download CA bundle</button>
      <ErrorMessage error={action.error} />
    </span>
  );
}

function CertificateTable({ api, tenant, items, onChange }: { api: CmkApi; tenant: string; items: Certificate[]; onChange: () => void }) {
  const action = useAction();
  const [confirming, setConfirming] = useState<string>();
  if (!items.length) return <p className="muted">No certificates issued yet.</p>;
  const revoke = async (serial: string) => {
    setConfirming(undefined);
    if (await action.run(() => api.revokeCertificate(tenant, serial, "revoked from the web UI"))) onChange();
  };
  return (
    <>
      <table>
        <thead>
          <tr><th scope="col">Service</th><th scope="col">Serial</th><th scope="col">Expires</th><th scope="col">State</th><th scope="col"><span className="sr-only">Actions</span></th></tr>
        </thead>
        <tbody>
          {items.map((c) => (
            <tr key={c.serial} data-testid="certificate-row">
              <td>{c.service_id}</td>
              <td><code className="wrap">{c.serial}</code></td>
              <td>{formatTime(c.not_after)}</td>
              <td><StateBadge state={c.status} />{c.revoked_at && <div className="muted small">{formatTime(c.revoked_at)}</div>}</td>
              <td>
                {c.status !== "revoked" && confirming !== c.serial && (
                  <button type="button" onClick={() => setConfirming(c.serial)} aria-label={`Revoke certificate ${c.serial}`}>Revoke</button>
                )}
                {confirming === c.serial && (
                  <span className="inline">
                    <button type="button" className="danger" onClick={() => revoke(c.serial)} autoFocus>Confirm revoke</button>
                    <button type="button" onClick={() => setConfirming(undefined)}>Cancel</button>
                  </span>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <ErrorMessage error={action.error} />
    </>
  );
}

export function mongoSettings(endpoint: string): { node: string; python: string; mongod: string } {
  const [host, port = "5696"] = endpoint.split(/:(?=\d+$)/);
  return {
    node: `const autoEncryption = {
  keyVaultNamespace: "encryption.__keyVault",
  kmsProviders: { kmip: { endpoint: "${endpoint}" } },
  tlsOptions: {
    kmip: {
      // the CA bundle downloaded above
      tlsCAFile: "/etc/openkcm/openkcm-ca.pem",
      // the issued certificate followed by its private key
      tlsCertificateKeyFile: "/etc/openkcm/client.pem",
    },
  },
};`,
    python: `from pymongo.encryption_options import AutoEncryptionOpts

opts = AutoEncryptionOpts(
    kms_providers={"kmip": {"endpoint": "${endpoint}"}},
    key_vault_namespace="encryption.__keyVault",
    kms_tls_options={"kmip": {
        "tlsCAFile": "/etc/openkcm/openkcm-ca.pem",
        "tlsCertificateKeyFile": "/etc/openkcm/client.pem",
    }},
)`,
    mongod: `mongod --enableEncryption \\
  --kmipServerName ${host} --kmipPort ${port} \\
  --kmipServerCAFile /etc/openkcm/openkcm-ca.pem \\
  --kmipClientCertificateFile /etc/openkcm/client.pem`,
  };
}

function IntegrationGuide({ tenant, endpoint }: { tenant: string; endpoint?: string }) {
  const ep = endpoint || "kmip.openkcm.example:5696";
  const s = mongoSettings(ep);
  return (
    <Section title="Integration guide: MongoDB" wide>
      <p>
        MongoDB talks to OpenKCM over KMIP with mutual TLS. The client certificate issued above identifies tenant <code>{tenant}</code>;
        the KMIP endpoint is <code data-testid="kmip-endpoint">{ep}</code>. Put the certificate and its private key in one PEM file
        (<code>cat client.crt client.key &gt; client.pem</code>).
      </p>
      <h3>Client-side field level encryption / Queryable Encryption (Node.js)</h3>
      <pre tabIndex={0}><code>{s.node}</code></pre>
      <h3>Python (pymongo)</h3>
      <pre tabIndex={0}><code>{s.python}</code></pre>
      <h3>Encryption at rest (mongod Enterprise)</h3>
      <pre tabIndex={0}><code>{s.mongod}</code></pre>
    </Section>
  );
}
