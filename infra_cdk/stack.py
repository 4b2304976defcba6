"""One OpenKCM deployment in one region: data, API, rotation, KMIP, web UI and observability."""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Fn, Stack, Tags
from constructs import Construct

from infra_cdk.components.api import Api
from infra_cdk.components.audit import AuditSchedule
from infra_cdk.components.data import Data
from infra_cdk.components.env import setting
from infra_cdk.components.kmip import KMIP_PORT, Kmip
from infra_cdk.components.network import Network
from infra_cdk.components.observability import Observability
from infra_cdk.components.rotation import Rotation, make_bus, route_notifications
from infra_cdk.components.webui import WebUi
from infra_cdk.config import DeployConfig
from infra_cdk.nag import suppress


class OpenKcmStack(Stack):
    def __init__(self, scope: Construct, cid: str, *, config: DeployConfig, env: Environment) -> None:
        super().__init__(
            scope,
            cid,
            env=env,
            description=f"OpenKCM deployment '{config.table_prefix}' (infra_cdk)",
            termination_protection=True,
        )
        Tags.of(self).add("openkcm:deployment", config.table_prefix)
        self.config = config
        self.data = Data(self, "Data", config=config)
        self.network = Network(self, "Network", config=config)
        self.bus = make_bus(self, config)

        base_env = {
            setting("table_prefix"): config.table_prefix,
            setting("root_key_provider"): "aws-kms",
            setting("root_kms_key_ids"): self.data.root_key_ids,
            setting("event_bus_name"): self.bus.event_bus_name,
            setting("trust_domain"): config.trust_domain,
            setting("audit_signer"): "aws-kms",
            setting("audit_signing_key_id"): self.data.signing_key.key_arn,
            "POWERTOOLS_METRICS_NAMESPACE": "OpenKCM",
        }
        if config.pkcs11_modules:
            base_env[setting("pkcs11_modules")] = ",".join(config.pkcs11_modules)
        self.api = Api(
            self, "Api", config=config, data=self.data, network=self.network, bus=self.bus, base_env=base_env
        )
        self.web = WebUi(
            self,
            "Web",
            config=config,
            data=self.data,
            api_domain=self.api.api_domain,
            identity_origins=self.api.identity_origins,
        )
        self.api.add_web_client(self.web.origins)
        self.api.add_routes()
        self.rotation = Rotation(
            self,
            "Rotation",
            config=config,
            data=self.data,
            network=self.network,
            api=self.api,
            bus=self.bus,
            base_env=base_env,
        )
        self.kmip = Kmip(
            self,
            "Kmip",
            config=config,
            data=self.data,
            network=self.network,
            api=self.api,
            bus=self.bus,
            base_env=base_env,
        )
        self.audit = AuditSchedule(self, "Audit", config=config, data=self.data, base_env=base_env)
        route_notifications(self, self.bus, self.api.topic, self.data)

        # The roles that assume a customer's BYOK/HYOK role (allow_customer_keystores): the trust template
        # (openkcm.ops.keystores.aws_trust_template) names them all, and so does the stack output.
        keystore_roles = Fn.join(
            ",",
            [
                self.api.cmk_api.role.role_arn,
                self.rotation.rotate.role.role_arn,
                self.kmip.task_role.role_arn,
            ],
        )
        # Values that exist only once the API and the distribution do.
        late_env = {
            setting("notification_topic_arn"): self.api.topic.topic_arn,
            setting("ui_base_url"): self.web.url,
            setting("keystore_access_role_arns"): keystore_roles,
        }
        self.functions = {
            **self.api.functions,
            "rotate": self.rotation.rotate,
            "audit_schedule": self.audit.function,
        }
        for fn in self.functions.values():
            for name, value in late_env.items():
                fn.function.add_environment(name, value)
        for name, value in late_env.items():
            self.kmip.container.add_environment(name, value)

        self.observability = Observability(
            self,
            "Observability",
            config=config,
            data=self.data,
            api=self.api,
            functions=self.functions,
            kmip=self.kmip,
        )

        outputs = {
            "ApiUrl": self.api.api_url,
            "WebUrl": self.web.url,
            "JwtIssuer": self.api.issuer,
            "KmipEndpoint": f"{self.kmip.nlb.load_balancer_dns_name}:{KMIP_PORT}",
            "WebhookUrl": f"{self.web.url}/v1/marketplace/events",
            "WebhookSecretArn": self.api.webhook_secret.secret_arn,
            "CaSecretArn": self.api.ca_secret.secret_arn,
            "KmipTlsSecretArn": self.kmip.tls_secret.secret_arn,
            "RootKeyArn": self.data.root_key.key_arn,  # the current version
            "RootKeyArns": self.data.root_key_ids,
            "AuditSigningKeyArn": self.data.signing_key.key_arn,
            "AuditArchiveBucket": self.data.audit_archive.bucket_name,
            "WebBucket": self.web.bucket.bucket_name,
            "DashboardName": self.observability.dashboard.dashboard_name,
            "RotateFunctionName": self.rotation.rotate.function.function_name,
            "AuditScheduleFunctionName": self.audit.function.function.function_name,
            # The principals a customer's BYOK/HYOK role must trust (the trust template lists the same).
            "KeystoreAccessRoleArns": keystore_roles,
        }
        if self.api.user_pool_client is not None:
            outputs["WebClientId"] = self.api.user_pool_client.user_pool_client_id
            outputs["UserPoolId"] = self.api.user_pool.user_pool_id
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

        suppress(self)
