"""Data: the DynamoDB tables (key schemas read from the pynamodb models, so they cannot drift), the
KMS keys (table encryption, internal root key, audit/tombstone signing) and the audit archive bucket.

The root key's policy is the heart of the platform-managed hierarchy: the account may administer the
key but not use it; only the service roles named by :meth:`Data.allow_root_key` may Encrypt/Decrypt,
and only with an encryption context that names a tenant and an L2 version
(``openkcm.domain.hierarchy.l2_context``), so every use shows up attributable in CloudTrail.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk.config import DeployConfig
from openkcm.config import Settings
from openkcm.domain import credentials
from openkcm.domain.audit.chain import writer_key_context
from openkcm.domain.hierarchy import l2_context
from openkcm.storage import models

# Key administration for the account, without any cryptographic use (kms:Encrypt etc. are absent).
# Not kms:Create*: kms:CreateGrant would let any principal of the account grant itself Encrypt/Decrypt/Sign.
KEY_ADMIN_ACTIONS = [
    "kms:CreateAlias",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
]

# The encryption contexts the root key accepts, taken from the domain's own context builders:
# "l2" wraps tenant L2 versions, "credentials" seals keystore credentials (DECISIONS 6), "writer" wraps
# each audit writer's per-process link-MAC key (openkcm.domain.audit.chain.writer_key_context: every
# process that records audit events encrypts under it once; checkpointers and verifiers decrypt).
_SAMPLE_CONTEXTS = {
    "l2": l2_context("t", 1),
    "credentials": credentials._context("a", "k"),
    "writer": writer_key_context("w"),
}
ROOT_CONTEXTS: dict[str, tuple[str, list[str]]] = {
    name: (sample["purpose"], sorted(sample)) for name, sample in _SAMPLE_CONTEXTS.items()
}

IDEMPOTENCY_LOGICAL = "idempotency"
# TTL attributes that a library (not a TTLAttribute of ours) writes: Powertools idempotency.
_TTL_BY_CONVENTION = {IDEMPOTENCY_LOGICAL: "expiration"}

_ATTR_TYPES = {"S": ddb.AttributeType.STRING, "N": ddb.AttributeType.NUMBER, "B": ddb.AttributeType.BINARY}


@dataclass(frozen=True)
class TableSpec:
    """Key schema of one physical table as the pynamodb models declare it."""

    logical: str
    hash_key: tuple[str, str]
    range_key: tuple[str, str] | None
    indexes: tuple[tuple[str, tuple[str, str], tuple[str, str] | None], ...]
    ttl_attribute: str | None
    projections: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (index, ALL|KEYS_ONLY|INCLUDE, attrs)

    def projection(self, index_name: str) -> tuple[str, tuple[str, ...]]:
        for name, kind, attributes in self.projections:
            if name == index_name:
                return kind, attributes
        return "ALL", ()


def _keys(key_schema: list[dict], types: dict[str, str]) -> tuple[tuple[str, str], tuple[str, str] | None]:
    hash_key = next(k["AttributeName"] for k in key_schema if k["KeyType"] == "HASH")
    range_key = next((k["AttributeName"] for k in key_schema if k["KeyType"] == "RANGE"), None)
    return (hash_key, types[hash_key]), ((range_key, types[range_key]) if range_key else None)


def table_specs() -> dict[str, TableSpec]:
    """Logical table name -> spec, merged over every model stored in that table.

    Several models share one table (tenants, L2 versions, certificates ...): they must agree on the key
    schema; indexes and TTL attributes are the union of what they declare."""
    logical_of = models._LOGICAL_NAMES
    specs: dict[str, TableSpec] = {}
    for model in models.ALL_MODELS:
        logical = logical_of[model]
        schema = model._get_schema()
        types = {a["AttributeName"]: a["AttributeType"] for a in schema["attribute_definitions"]}
        for index in schema["global_secondary_indexes"]:
            types.update({a["AttributeName"]: a["AttributeType"] for a in index["attribute_definitions"]})
        hash_key, range_key = _keys(schema["key_schema"], types)
        indexes = tuple(
            (index["index_name"], *_keys(index["key_schema"], types))
            for index in schema["global_secondary_indexes"]
        )
        projections = tuple(
            (
                index["index_name"],
                index["projection"]["ProjectionType"],
                tuple(index["projection"].get("NonKeyAttributes", ())),
            )
            for index in schema["global_secondary_indexes"]
        )
        ttl = next(
            (name for name, attr in model.get_attributes().items() if type(attr).__name__ == "TTLAttribute"),
            None,
        )
        previous = specs.get(logical)
        if previous is not None:
            if (previous.hash_key, previous.range_key) != (hash_key, range_key):
                raise ValueError(f"models of table {logical!r} disagree on its key schema")
            if previous.ttl_attribute and ttl and previous.ttl_attribute != ttl:
                raise ValueError(f"models of table {logical!r} name two TTL attributes")
            merged = {i[0]: i for i in previous.indexes}
            merged.update({i[0]: i for i in indexes})
            indexes = tuple(merged[name] for name in sorted(merged))
            projected = {p[0]: p for p in previous.projections}
            projected.update({p[0]: p for p in projections})
            projections = tuple(projected[name] for name in sorted(projected))
            ttl = previous.ttl_attribute or ttl
        ttl = ttl or _TTL_BY_CONVENTION.get(logical)
        specs[logical] = TableSpec(logical, hash_key, range_key, indexes, ttl, projections)
    missing = set(models.table_names("x")) - set(specs)
    if missing:
        raise ValueError(f"no model declares the key schema of {sorted(missing)}")
    return specs


def _attr(name_type: tuple[str, str]) -> ddb.Attribute:
    return ddb.Attribute(name=name_type[0], type=_ATTR_TYPES[name_type[1]])


class Data(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: DeployConfig) -> None:
        super().__init__(scope, cid)
        self.config = config

        self.table_key = kms.Key(
            self,
            "TableKey",
            description=f"OpenKCM {config.table_prefix}: DynamoDB tables, queues and topics",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

        # Root key versions (openkcm.domain.rootkey.AwsKmsRootKey): version N is the N-th key of
        # OPENKCM_ROOT_KMS_KEY_IDS, the last one is current. KMS rotates each key's material yearly by
        # itself; raising rootKeyVersions adds a new key (then run the root re-wrap). Keys are never
        # removed from the list (that would renumber the versions): disable an old one instead.
        self.root_keys = [
            kms.Key(
                self,
                "RootKey" if version == 1 else f"RootKeyV{version}",
                description=(
                    f"OpenKCM {config.table_prefix}: internal root key version {version} "
                    "(parent of platform-managed L2 keys)"
                ),
                enable_key_rotation=True,
                removal_policy=RemovalPolicy.RETAIN,
                policy=iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="AccountAdministersButDoesNotUse",
                            principals=[iam.AccountRootPrincipal()],
                            actions=KEY_ADMIN_ACTIONS,
                            resources=["*"],
                        )
                    ]
                ),
            )
            for version in range(1, config.root_key_versions + 1)
        ]
        self.root_key = self.root_keys[-1]
        self.root_key_ids = Fn.join(",", [key.key_arn for key in self.root_keys])
        self.signing_key = kms.Key(
            self,
            "AuditSigningKey",
            description=f"OpenKCM {config.table_prefix}: signs audit checkpoints and crypto-shred tombstones",
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            removal_policy=RemovalPolicy.RETAIN,
            policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="AccountAdministersButDoesNotSign",
                        principals=[iam.AccountRootPrincipal()],
                        actions=KEY_ADMIN_ACTIONS,
                        resources=["*"],
                    ),
                    iam.PolicyStatement(
                        sid="AnyoneInAccountMayVerify",
                        principals=[iam.AccountRootPrincipal()],
                        actions=["kms:Verify"],
                        resources=["*"],
                    ),
                ]
            ),
        )

        self.specs = table_specs()
        self.tables: dict[str, ddb.Table] = {}
        for logical, physical in models.table_names(config.table_prefix).items():
            spec = self.specs[logical]
            table = ddb.Table(
                self,
                f"Table-{logical}",
                table_name=physical,
                partition_key=_attr(spec.hash_key),
                sort_key=_attr(spec.range_key) if spec.range_key else None,
                billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                deletion_protection=True,
                encryption=ddb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=self.table_key,
                time_to_live_attribute=spec.ttl_attribute,
                removal_policy=RemovalPolicy.RETAIN,
            )
            for index_name, hash_key, range_key in spec.indexes:
                kind, attributes = spec.projection(index_name)
                table.add_global_secondary_index(
                    index_name=index_name,
                    partition_key=_attr(hash_key),
                    sort_key=_attr(range_key) if range_key else None,
                    projection_type=getattr(ddb.ProjectionType, kind),
                    non_key_attributes=list(attributes) or None,
                )
            self.tables[logical] = table

        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            # CloudFront standard logging writes with ACLs; nothing else is granted through them.
            object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(config.log_retention_days))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.audit_archive = s3.Bucket(
            self,
            "AuditArchive",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.table_key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(
                Duration.days(config.audit_archive_retention_days)
            ),
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="audit-archive/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Segments are written once: a second PutObject of a key would become the version readers get
        # (Object Lock keeps the first, out of sight). S3 refuses a put with If-None-Match on an existing
        # key; this refuses puts without it, whoever sends them.
        self.audit_archive.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AuditSegmentsWriteOnce",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[self.audit_archive.arn_for_objects("*")],
                conditions={"Null": {"s3:if-none-match": "true"}},
            )
        )

    # -- grants: explicit actions on explicit ARNs, never "*" -------------------------------------------

    def table_arns(self, logical: str) -> list[str]:
        table = self.tables[logical]
        arns = [table.table_arn]
        if logical in self.specs:
            arns += [f"{table.table_arn}/index/{name}" for name, _, _ in self.specs[logical].indexes]
        return arns

    def grant_tables(self, role: iam.IRole, access: dict[str, list[str]]) -> None:
        """``access``: logical table -> DynamoDB actions (without the ``dynamodb:`` prefix)."""
        for logical, actions in sorted(access.items()):
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid=f"Table{logical.title().replace('-', '')}",
                    actions=[f"dynamodb:{a}" for a in sorted(set(actions))],
                    resources=self.table_arns(logical),
                )
            )
        region = Stack.of(self).region
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="TableKeyViaDynamoDB",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self.table_key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{region}.amazonaws.com"}},
            )
        )

    def allow_root_key(
        self, role: iam.IRole, actions: list[str], contexts: tuple[str, ...] = ("l2",)
    ) -> None:
        """Let ``role`` use the root key for ``actions`` (kms:Encrypt / kms:Decrypt), only with one of
        the named encryption contexts (every key present, purpose fixed, no other keys)."""
        for name in contexts:
            purpose, keys = ROOT_CONTEXTS[name]
            conditions = {
                "StringEquals": {"kms:EncryptionContext:purpose": purpose},
                "Null": {f"kms:EncryptionContext:{key}": "false" for key in keys},
                "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": keys},
            }
            statement = dict(actions=sorted(actions), conditions=conditions)
            # Key policy: names the role (nothing else in the account may use the key) ...
            for key in self.root_keys:
                key.add_to_resource_policy(
                    iam.PolicyStatement(principals=[role], resources=["*"], **statement)
                )
            # ... and the role's own policy says the same, so both sides must agree.
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid=f"RootKey{name.title()}Context",
                    resources=[key.key_arn for key in self.root_keys],
                    **statement,
                )
            )

    def allow_signing(self, role: iam.IRole) -> None:
        self.signing_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[role],
                actions=["kms:Sign", "kms:Verify", "kms:GetPublicKey"],
                resources=["*"],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="AuditSigning",
                actions=["kms:Sign", "kms:Verify", "kms:GetPublicKey"],
                resources=[self.signing_key.key_arn],
            )
        )

    def allow_queue_or_topic_key(self, role: iam.IRole, service: str) -> None:
        """SNS/SQS encrypted with the table key: the publisher needs the data key through that service."""
        region = Stack.of(self).region
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid=f"TableKeyVia{service.title()}",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.table_key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"{service}.{region}.amazonaws.com"}},
            )
        )

    def grant_archive(self, role: iam.IRole, *, write: bool) -> None:
        """Audit archive (openkcm.domain.audit.archive.S3ArchiveStore): list, head/get, and for the
        archiving job put. Never delete: Object Lock would refuse it anyway."""
        prefix = Settings.model_fields["audit_archive_prefix"].default
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="AuditArchiveList",
                actions=["s3:ListBucket"],
                resources=[self.audit_archive.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="AuditArchiveObjects",
                actions=["s3:GetObject", *(["s3:PutObject"] if write else [])],
                resources=[self.audit_archive.arn_for_objects(f"{prefix}*")],
            )
        )
        self.allow_queue_or_topic_key(role, "s3")

    def allow_customer_keystores(self, role: iam.IRole) -> None:
        """BYOK/HYOK in AWS KMS: assume the customer's role (the trust template of
        ``openkcm.ops.keystores.aws_trust_template``) in *another* account, always with an external id."""
        stack = Stack.of(self)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="AssumeCustomerKeystoreRole",
                actions=["sts:AssumeRole"],
                resources=[f"arn:{stack.partition}:iam::*:role/*"],
                conditions={
                    "Null": {"sts:ExternalId": "false"},
                    "StringNotEquals": {"aws:ResourceAccount": stack.account},
                },
            )
        )
