"""Web UI: a private S3 bucket served by CloudFront through origin access control, with security
headers on every response. ``/v1/*`` goes to the HTTP API through the same distribution, so the UI
talks to its own origin (no CORS, ``connect-src 'self'``). ``frame-ancestors`` lists only the
configured console origins (the UI may be framed by the platform's own console, nothing else)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infra_cdk.components.data import Data
from infra_cdk.config import DeployConfig

# Paths without a file extension are client-side routes of the single-page app.
SPA_REWRITE = """function handler(event) {
  var request = event.request;
  var last = request.uri.split('/').pop();
  if (last.indexOf('.') === -1) { request.uri = '/index.html'; }
  return request;
}"""


def content_security_policy(frame_ancestors: list[str], connect: list[str]) -> str:
    ancestors = " ".join(["'self'", *frame_ancestors]) if frame_ancestors else "'none'"
    connect_src = " ".join(["'self'", *dict.fromkeys(connect)])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect_src}",
            f"form-action 'self' {' '.join(dict.fromkeys(connect))}".strip(),
            f"frame-ancestors {ancestors}",
            "object-src 'none'",
            "base-uri 'self'",
        ]
    )


class WebUi(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: DeployConfig,
        data: Data,
        api_domain: str,
        identity_origins: list[str],
    ) -> None:
        super().__init__(scope, cid)
        self.bucket = s3.Bucket(
            self,
            "Site",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=data.log_bucket,
            server_access_logs_prefix="web-site/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        connect = list(identity_origins)  # origins (scheme://host) the UI's OIDC client calls
        self.csp = content_security_policy(config.frame_ancestors, connect)
        self.headers = cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            comment="OpenKCM web UI security headers",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                # Not override: the S3 origin sends no CSP (the UI gets this one), while /v1/* responses
                # that set their own (the HTML compliance report: default-src 'none') keep it.
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=self.csp, override=False
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.days(730),
                    include_subdomains=True,
                    preload=True,
                    override=True,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN,
                    override=True,
                ),
                # With console origins configured, CSP frame-ancestors decides; X-Frame-Options cannot
                # express an allow-list, so it is only sent when nobody may frame the UI.
                frame_options=None
                if config.frame_ancestors
                else cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
            ),
            custom_headers_behavior=cloudfront.ResponseCustomHeadersBehavior(
                custom_headers=[
                    cloudfront.ResponseCustomHeader(
                        header="Permissions-Policy",
                        value="camera=(), microphone=(), geolocation=()",
                        override=True,
                    ),
                    cloudfront.ResponseCustomHeader(
                        header="Cross-Origin-Opener-Policy", value="same-origin", override=True
                    ),
                ]
            ),
        )
        rewrite = cloudfront.Function(
            self,
            "SpaRewrite",
            code=cloudfront.FunctionCode.from_inline(SPA_REWRITE),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            comment="OpenKCM: single-page app routes to /index.html",
        )
        certificate = (
            acm.Certificate.from_certificate_arn(self, "Certificate", config.web_certificate_arn)
            if config.web_certificate_arn
            else None
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="OpenKCM web UI and CMK API",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                response_headers_policy=self.headers,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                function_associations=[
                    cloudfront.FunctionAssociation(
                        function=rewrite, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST
                    )
                ],
            ),
            additional_behaviors={
                "/v1/*": cloudfront.BehaviorOptions(
                    origin=origins.HttpOrigin(
                        api_domain, protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY
                    ),
                    viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                    allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
                    cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
                    origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
                    response_headers_policy=self.headers,
                )
            },
            domain_names=config.web_domain_names or None,
            certificate=certificate,
            minimum_protocol_version=cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate else None,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_logging=True,
            log_bucket=data.log_bucket,
            log_file_prefix="cloudfront/",
            web_acl_id=config.web_acl_arn or None,
        )
        self.url = f"https://{self.distribution.distribution_domain_name}"
        self.origins = [self.url] + [f"https://{name}" for name in config.web_domain_names]
        self.deployment = None
        if (config.web_dist_dir / "index.html").is_file():
            self.deployment = s3deploy.BucketDeployment(
                self,
                "Deploy",
                sources=[s3deploy.Source.asset(str(config.web_dist_dir))],
                destination_bucket=self.bucket,
                distribution=self.distribution,
                distribution_paths=["/*"],
                memory_limit=512,
            )
