"""API: the CMK API Lambda behind an HTTP API with a JWT authorizer, the marketplace webhook route
(no JWT: its HMAC signature is checked by the function with a secret from Secrets Manager), the SQS
queue + DLQ between webhook and provisioning worker, the SNS notification topic, and the identity
provider (a Cognito user pool made here, or an external OIDC issuer given as parameters)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secrets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk.components.data import Data
from infra_cdk.components.env import infra, setting
from infra_cdk.components.functions import ServiceFunction, retention
from infra_cdk.components.network import Network
from infra_cdk.config import DeployConfig

WEBHOOK_PATH = "/v1/marketplace/events"

# DynamoDB action sets (pynamodb: TransactWriteItems is authorized per contained Put/Update/Delete/Check).
READ = ["GetItem", "BatchGetItem", "Query", "DescribeTable"]
WRITE = ["PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem", "BatchWriteItem"]
# The audit table holds several item types in each tenant's partition: W# writer links, K# writer keys,
# C# signed checkpoints, H#HEADS (the checkpointer's cache), A# archive manifests. Grants are by action on
# the table (and index) ARNs, with no dynamodb:LeadingKeys or sort-key condition, so a new item type
# needs no policy change. Writers append (and the WAL-mode KMIP checkpointer puts C#/H#HEADS with the
# same PutItem); only the archiving job also updates (expire_at on archived links).
AUDIT_APPEND = ["GetItem", "Query", "PutItem", "DescribeTable"]
AUDIT_ARCHIVE = [*AUDIT_APPEND, "UpdateItem"]
COUNT = ["UpdateItem", "DescribeTable"]

PRETOKEN_ASSET = Path(__file__).resolve().parent.parent / "pretoken"


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: DeployConfig,
        data: Data,
        network: Network,
        bus: events.IEventBus,
        base_env: dict[str, str],
    ) -> None:
        super().__init__(scope, cid)
        stack = Stack.of(self)

        # -- secrets -------------------------------------------------------------------------------------
        self.webhook_secret = secrets.Secret(
            self,
            "WebhookSecret",
            description="OpenKCM marketplace webhook HMAC secret (X-OpenKCM-Signature, DECISIONS 13)",
            generate_secret_string=secrets.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
            encryption_key=data.table_key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        if config.ca_secret_arn:
            self.ca_secret = secrets.Secret.from_secret_complete_arn(self, "CaSecret", config.ca_secret_arn)
        else:
            self.ca_secret = secrets.Secret(
                self,
                "CaSecret",
                description='OpenKCM deployment CA: {"ca_cert_pem": ..., "ca_key_pem": ...} (fill after deploy)',
                encryption_key=data.table_key,
                removal_policy=RemovalPolicy.RETAIN,
            )

        # -- provisioning queue and notifications ---------------------------------------------------------
        self.dlq = sqs.Queue(
            self,
            "ProvisionDlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=data.table_key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "ProvisionQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=data.table_key,
            enforce_ssl=True,
            visibility_timeout=Duration.minutes(6),  # 6 x the worker's timeout
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=5),
        )
        self.topic = sns.Topic(
            self,
            "Notifications",
            display_name="OpenKCM notifications",
            master_key=data.table_key,
            enforce_ssl=True,
        )

        # -- identity -------------------------------------------------------------------------------------
        if config.jwt_issuer:
            issuer, audience = config.jwt_issuer, list(config.jwt_audience)
            self.user_pool = None
            self.user_pool_client = None
            parts = urlsplit(issuer)
            self.identity_origins = [f"{parts.scheme}://{parts.netloc}"]
        else:
            issuer, audience = self._cognito(config, data)
            self.identity_origins = [
                f"https://cognito-idp.{stack.region}.amazonaws.com",
                self.domain.base_url(),
            ]

        self.issuer = issuer
        self.audience = audience

        # -- functions ------------------------------------------------------------------------------------
        api_sg = network.egress_group("CmkApiSg", "OpenKCM CMK API Lambda: AWS APIs and on-prem HSM only")
        self.cmk_api = ServiceFunction(
            self,
            "CmkApi",
            config=config,
            asset="cmk_api",
            handler="functions/cmk_api/handler.handler",
            description="OpenKCM CMK REST API",
            environment={
                **base_env,
                setting("ca_secret_arn"): self.ca_secret.secret_arn,
                setting("audit_archive_bucket"): data.audit_archive.bucket_name,
            },
            reserved_concurrency=config.api_reserved_concurrency,
            vpc=network.vpc,
            subnets=network.private_subnets,
            security_group=api_sg,
        )
        self.webhook = ServiceFunction(
            self,
            "Webhook",
            config=config,
            asset="provision",
            handler="functions/provision/handler.webhook_handler",
            description="OpenKCM marketplace webhook: verify HMAC, enqueue",
            environment={
                **base_env,
                setting("webhook_secret_arn"): self.webhook_secret.secret_arn,
                setting("provision_queue_url"): self.queue.queue_url,
            },
            reserved_concurrency=config.webhook_reserved_concurrency,
            timeout=Duration.seconds(10),
            memory_mib=512,
        )
        self.worker = ServiceFunction(
            self,
            "ProvisionWorker",
            config=config,
            asset="provision",
            handler="functions/provision/handler.worker_handler",
            description="OpenKCM provisioning worker (SQS)",
            environment=dict(base_env),
            reserved_concurrency=config.worker_reserved_concurrency,
            timeout=Duration.minutes(1),
        )
        self.worker.function.add_event_source(
            sources.SqsEventSource(self.queue, batch_size=10, report_batch_item_failures=True)
        )
        # What API Gateway invokes: the function, or its "live" alias when concurrency is provisioned.
        self.api_target: lambda_.IFunction = self.cmk_api.function
        if config.api_provisioned_concurrency:
            self.api_target = lambda_.Alias(
                self,
                "CmkApiLive",
                alias_name="live",
                version=self.cmk_api.function.current_version,
                provisioned_concurrent_executions=config.api_provisioned_concurrency,
            )

        # -- permissions: each role only what its code does -----------------------------------------------
        data.grant_tables(
            self.cmk_api.role,
            {
                "accounts": READ + WRITE + ["Scan"],  # platform operators list every account
                "tenants": READ + WRITE,
                "objects": READ,
                "keystores": READ + WRITE,
                "audit": AUDIT_APPEND,
                "usage": READ + COUNT,
                "idempotency": READ + WRITE,
            },
        )
        data.grant_tables(
            self.webhook.role,
            {"audit": AUDIT_APPEND, "usage": COUNT, "idempotency": READ + WRITE},
        )
        data.grant_tables(
            self.worker.role,
            {
                "accounts": READ + WRITE,
                "tenants": READ + WRITE,
                "keystores": READ,
                "audit": AUDIT_APPEND,
                "usage": COUNT,
                "idempotency": READ + WRITE,
            },
        )
        data.allow_root_key(self.cmk_api.role, ["kms:Encrypt", "kms:Decrypt"], ("l2", "credentials"))
        data.allow_root_key(self.worker.role, ["kms:Encrypt", "kms:Decrypt"])
        # Audit writer keys (issue 11): every writer wraps its per-process link-MAC key once (Encrypt);
        # the CMK API also verifies chains and builds compliance reports, which unwraps them (Decrypt).
        data.allow_root_key(self.cmk_api.role, ["kms:Encrypt", "kms:Decrypt"], ("writer",))
        for writer in (self.webhook, self.worker):
            data.allow_root_key(writer.role, ["kms:Encrypt"], ("writer",))
        data.allow_signing(self.cmk_api.role)
        data.grant_archive(self.cmk_api.role, write=False)
        data.allow_customer_keystores(self.cmk_api.role)
        data.allow_signing(self.worker.role)
        self.ca_secret.grant_read(self.cmk_api.role)
        self.webhook_secret.grant_read(self.webhook.role)
        self.webhook.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="EnqueueProvisioning", actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]
            )
        )
        data.allow_queue_or_topic_key(self.webhook.role, "sqs")
        # Every process publishes domain events, security events among them (a bad webhook signature too).
        for fn in (self.cmk_api, self.webhook, self.worker):
            self.grant_events_and_notify(fn.role, bus, data)

        # -- HTTP API (routes come in add_routes, once the web client -- the JWT audience -- exists) -------
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.http_api = apigw.HttpApi(
            self,
            "HttpApi",
            api_name=f"{config.table_prefix}-cmk-api",
            description="OpenKCM CMK API",
            create_default_stage=False,
        )
        self.api_domain = f"{self.http_api.api_id}.execute-api.{stack.region}.{stack.url_suffix}"
        self.api_url = f"https://{self.api_domain}"
        self.functions = {"cmk_api": self.cmk_api, "webhook": self.webhook, "worker": self.worker}

    def add_routes(self) -> None:
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.http_api,
            auto_deploy=True,
            stage_name="$default",
            throttle=apigw.ThrottleSettings(rate_limit=500, burst_limit=1000),
        )
        cfn_stage: apigw.CfnStage = self.stage.node.default_child  # type: ignore[assignment]
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=(
                '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                '"routeKey":"$context.routeKey","status":"$context.status",'
                '"latency":"$context.responseLatency","sub":"$context.authorizer.claims.sub",'
                '"error":"$context.error.message","authError":"$context.authorizer.error"}'
            ),
        )
        if not self.audience:
            raise ValueError("the JWT authorizer has no audience: call add_web_client() first")
        self.authorizer = authorizers.HttpJwtAuthorizer(
            "Jwt",
            self.issuer,
            jwt_audience=list(self.audience),
            authorizer_name="openkcm-jwt",
            identity_source=["$request.header.Authorization"],
        )
        self.http_api.add_routes(
            path="/v1/{proxy+}",
            methods=[
                apigw.HttpMethod.GET,
                apigw.HttpMethod.POST,
                apigw.HttpMethod.PUT,
                apigw.HttpMethod.PATCH,
                apigw.HttpMethod.DELETE,
            ],
            integration=integrations.HttpLambdaIntegration("CmkApiIntegration", self.api_target),
            authorizer=self.authorizer,
        )
        # Routes the API itself declares public (health, OpenAPI document): same function, no authorizer.
        from openkcm.api.app import PUBLIC_ROUTES

        for method, path in sorted(PUBLIC_ROUTES):
            self.http_api.add_routes(
                path=path,
                methods=[apigw.HttpMethod(method)],
                integration=integrations.HttpLambdaIntegration(
                    f"Public{method}{path.replace('/', '-').replace('.', '-')}", self.api_target
                ),
                authorizer=apigw.HttpNoneAuthorizer(),
            )
        # The webhook is called by the marketplace, which has no JWT: the function verifies the HMAC.
        self.http_api.add_routes(
            path=WEBHOOK_PATH,
            methods=[apigw.HttpMethod.POST],
            integration=integrations.HttpLambdaIntegration("WebhookIntegration", self.webhook.function),
            authorizer=apigw.HttpNoneAuthorizer(),
        )

    def grant_events_and_notify(self, role: iam.IRole, bus: events.IEventBus, data: Data) -> None:
        """Publish domain events on the bus (DECISIONS 14) and notifications on the SNS topic."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PutDomainEvents", actions=["events:PutEvents"], resources=[bus.event_bus_arn]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(sid="Notify", actions=["sns:Publish"], resources=[self.topic.topic_arn])
        )
        data.allow_queue_or_topic_key(role, "sns")

    def _cognito(self, config: DeployConfig, data: Data) -> tuple[str, list[str]]:
        """A user pool whose access tokens carry the DECISIONS 12 claims (``openkcm:account``,
        ``openkcm:roles``) added by a pre-token-generation (V2) trigger from custom attributes."""
        stack = Stack.of(self)
        pretoken_logs = logs.LogGroup(
            self,
            "PreTokenLogs",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
        )
        pretoken_role = iam.Role(
            self, "PreTokenRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com")
        )
        pretoken_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="OwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[pretoken_logs.log_group_arn],
            )
        )
        pretoken = lambda_.Function(
            self,
            "PreToken",
            description="OpenKCM: map Cognito custom attributes to openkcm:* access-token claims",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            code=lambda_.Code.from_asset(str(PRETOKEN_ASSET)),
            handler="index.handler",
            timeout=Duration.seconds(5),
            role=pretoken_role,
            log_group=pretoken_logs,
        )
        self.pretoken = pretoken
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            user_pool_name=f"{config.table_prefix}-users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            custom_attributes={
                "account": cognito.StringAttribute(min_len=1, max_len=128, mutable=True),
                "roles": cognito.StringAttribute(min_len=0, max_len=256, mutable=True),
            },
            feature_plan=cognito.FeaturePlan.PLUS if config.cognito_plus else cognito.FeaturePlan.ESSENTIALS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION
            if config.cognito_plus
            else None,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.user_pool.add_trigger(
            cognito.UserPoolOperation.PRE_TOKEN_GENERATION_CONFIG, pretoken, cognito.LambdaVersion.V2_0
        )
        self.domain = self.user_pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"{config.table_prefix}-{stack.account}"
            ),
        )
        self.web_callback_urls: list[str] = []
        self.user_pool_client = None
        issuer = f"https://cognito-idp.{stack.region}.amazonaws.com/{self.user_pool.user_pool_id}"
        # The client (its callback URL is the CloudFront address) is added by add_web_client(); the
        # audience list is filled then, before synthesis renders the authorizer.
        self._audience: list[str] = []
        return issuer, self._audience

    def add_web_client(self, callback_origins: list[str]) -> None:
        """The web UI's public OIDC client (authorization code + PKCE, no secret)."""
        if self.user_pool is None:
            return
        self.user_pool_client = self.user_pool.add_client(
            "WebClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=[f"{origin}/callback" for origin in callback_origins],
                logout_urls=[f"{origin}/" for origin in callback_origins],
            ),
            # Users may not write their own attributes: custom:account and custom:roles become the token's
            # account and roles (pretoken trigger), and an app client without WriteAttributes lets a user
            # with an SRP-issued access token set them through UpdateUserAttributes. Administrators set them.
            write_attributes=cognito.ClientAttributes().with_standard_attributes(fullname=True),
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True, email_verified=True, fullname=True)
            .with_custom_attributes("account", "roles"),
            prevent_user_existence_errors=True,
            access_token_validity=Duration.minutes(60),
            id_token_validity=Duration.minutes(60),
            refresh_token_validity=Duration.days(1),
            enable_token_revocation=True,
        )
        self._audience.append(self.user_pool_client.user_pool_client_id)

    @property
    def cognito_domain_url(self) -> str | None:
        if self.user_pool is None:
            return None
        return self.domain.base_url()
