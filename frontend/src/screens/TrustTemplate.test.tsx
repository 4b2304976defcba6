import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { CmkApi } from "../api/client";
import { fakeFetch } from "../test/fakeServer";
import { TrustTemplate } from "./TrustTemplate";

const ARN = "arn:aws:kms:us-east-1:210987654321:key/1234abcd-12ab-34cd-56ef-1234567890ab";

describe("AWS trust template", () => {
  it("asks for the role and key, shows the policies, and fills the role ARN on request", async () => {
    const user = userEvent.setup();
    const log: string[] = [];
    let used = "";
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/accounts/acme/trust-template/aws": ({ query }) => ({ body: {
        openkcm_principal: "arn:aws:iam::111111111111:role/openkcm-api", role_name: query.get("role_name"),
        role_trust_policy: { Statement: [{ Action: "sts:AssumeRole" }] },
        key_policy_statement: { Action: ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"] },
        keystore_config: { region: "us-east-1", role_arn: `arn:aws:iam::210987654321:role/${query.get("role_name")}` },
      } }),
    }, log));
    render(<TrustTemplate api={api} account="acme" keyRef={ARN} onUseRole={(arn) => { used = arn; }} />);
    await user.click(screen.getByText(/trust template\)/));
    const role = screen.getByLabelText("Role name");
    await user.clear(role);
    await user.type(role, "AcmeOpenKCM");
    await user.click(screen.getByRole("button", { name: "Show trust template" }));
    expect((await screen.findByTestId("trust-template")).textContent).toContain("sts:AssumeRole");
    expect(log[0]).toContain("role_name=AcmeOpenKCM");
    expect(log[0]).toContain(`key_arn=${encodeURIComponent(ARN)}`);
    await user.click(screen.getByRole("button", { name: /^Use arn:aws:iam::210987654321:role\/AcmeOpenKCM$/ }));
    expect(used).toBe("arn:aws:iam::210987654321:role/AcmeOpenKCM");
  });

  it("names every OpenKCM role that reaches the key when the API lists them", async () => {
    const user = userEvent.setup();
    const api = new CmkApi("http://api.test", fakeFetch({
      "GET /v1/accounts/acme/trust-template/aws": ({ query }) => ({ body: {
        openkcm_principal: "arn:aws:iam::111111111111:role/openkcm-api",
        openkcm_principals: ["arn:aws:iam::111111111111:role/openkcm-api", "arn:aws:iam::111111111111:role/openkcm-kmip"],
        role_name: query.get("role_name"), role_trust_policy: {}, key_policy_statement: {},
        keystore_config: { region: "us-east-1", role_arn: "arn:aws:iam::210987654321:role/R" },
      } }),
    }, []));
    render(<TrustTemplate api={api} account="acme" keyRef={ARN} onUseRole={() => undefined} />);
    await user.click(screen.getByText(/trust template\)/));
    await user.click(screen.getByRole("button", { name: "Show trust template" }));
    const text = (await screen.findByTestId("trust-template")).textContent ?? "";
    expect(text).toContain("role/openkcm-api");
    expect(text).toContain("role/openkcm-kmip");
  });
});
