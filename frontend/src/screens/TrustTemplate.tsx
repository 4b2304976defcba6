import { useState } from "react";
import type { CmkApi } from "../api/client";
import type { AwsTrustTemplate } from "../api/types";
import { ErrorMessage } from "../components/common";
import { download } from "../lib/format";
import { useAction } from "../lib/useAsync";

const KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/.+$/;

/** The IAM role trust policy and key-policy statement to paste into the customer's AWS account. */
export function TrustTemplate({ api, account, keyRef, onUseRole }: { api: CmkApi; account: string; keyRef: string; onUseRole: (roleArn: string) => void }) {
  const [roleName, setRoleName] = useState("OpenKCMKeyAccess");
  const [template, setTemplate] = useState<AwsTrustTemplate>();
  const action = useAction();
  const load = async () => {
    const reply = await action.run(() => api.awsTrustTemplate(account, roleName.trim(), KEY_ARN.test(keyRef) ? keyRef : undefined));
    if (reply) setTemplate(reply);
  };
  const roleArn = template?.keystore_config?.role_arn;
  return (
    <details className="trust">
      <summary>Set up access in your AWS account (trust template)</summary>
      <p className="muted">
        Create an IAM role that OpenKCM may assume, and allow that role to use your key. Paste these documents into your account; the
        role's trust policy names the external id OpenKCM presents for your account (you do not choose it, so no one else can).
      </p>
      <div className="inline">
        <label htmlFor="trust-role">Role name</label>
        <input id="trust-role" value={roleName} onChange={(e) => setRoleName(e.target.value)} />
        <button type="button" onClick={load} disabled={action.busy || !roleName.trim()}>{action.busy ? "Loading…" : "Show trust template"}</button>
      </div>
      <ErrorMessage error={action.error} />
      {template && (
        <div data-testid="trust-template">
          <p>
            OpenKCM acts as{" "}
            {(template.openkcm_principals?.length ? template.openkcm_principals : [template.openkcm_principal]).map(
              (principal, index) => (
                <span key={principal}>
                  {index > 0 && ", "}
                  <code className="wrap">{principal}</code>
                </span>
              ),
            )}
            .
          </p>
          <h4>Role trust policy</h4>
          <pre tabIndex={0}><code>{JSON.stringify(template.role_trust_policy, null, 2)}</code></pre>
          <h4>Key policy statement (add to your key's policy)</h4>
          <pre tabIndex={0}><code>{JSON.stringify(template.key_policy_statement, null, 2)}</code></pre>
          <div className="inline">
            <button type="button" onClick={() => download(`${template.role_name}-trust-template.json`, JSON.stringify(template, null, 2), "application/json")}>
              Download as JSON
            </button>
            {roleArn && !roleArn.includes("<") && (
              <button type="button" onClick={() => onUseRole(roleArn)}>Use {roleArn}</button>
            )}
          </div>
        </div>
      )}
    </details>
  );
}
