"""The web UI (deploys ``frontend/``): an S3 bucket, served over HTTPS by CloudFront with origin access control, or
(websiteMode=s3-website) the plain S3 website endpoint; plus the generated ``config.json`` the UI reads at start.

Owns where the site lives and its origin (``site_url``, used for CORS and the sign-in callback). It takes the
``frontend/`` folder as it is, whatever it holds, and writes ``config.json`` beside it in the same deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

FRONTEND = Path(__file__).resolve().parents[1] / "frontend"


class Website(Construct):
    """``bucket``, ``log_bucket``, ``distribution`` (None in s3-website mode), ``site_url`` (origin, no trailing slash)."""

    def __init__(
        self, scope: Construct, id_: str, *, mode: str, log_retention: logs.RetentionDays, frontend_dir: Path = FRONTEND
    ) -> None:
        super().__init__(scope, id_)
        self.mode = mode
        self._log_retention = log_retention
        self._frontend_dir = frontend_dir
        self.distribution: cloudfront.Distribution | None = None
        # Access logs of the site bucket and of CloudFront (CloudFront's standard logs need ACLs: object writer).
        private = {"block_public_access": s3.BlockPublicAccess.BLOCK_ALL, "enforce_ssl": True,
                   "encryption": s3.BucketEncryption.S3_MANAGED, "removal_policy": RemovalPolicy.RETAIN}
        self.log_bucket = s3.Bucket(
            self, "AccessLogs", **private, object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
        )
        logged = {"server_access_logs_bucket": self.log_bucket, "server_access_logs_prefix": "s3/"}
        if mode == "cloudfront":
            self.bucket = s3.Bucket(self, "Bucket", **private, **logged)
            self.distribution = cloudfront.Distribution(
                self,
                "Cdn",
                comment="aipm-kiro web UI",
                default_root_object="index.html",
                default_behavior=cloudfront.BehaviorOptions(
                    origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                    viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                    response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
                    cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                ),
                http_version=cloudfront.HttpVersion.HTTP2_AND_3,
                price_class=cloudfront.PriceClass.PRICE_CLASS_100,
                enable_logging=True,
                log_bucket=self.log_bucket,
                log_file_prefix="cloudfront/",
            )
            self.site_url = "https://" + self.distribution.distribution_domain_name
        else:
            # The seed's plain website endpoint: http only, public reads of the site's objects (chosen explicitly).
            self.bucket = s3.Bucket(
                self, "Bucket", **logged, website_index_document="index.html", public_read_access=True,
                encryption=s3.BucketEncryption.S3_MANAGED, removal_policy=RemovalPolicy.RETAIN,
                block_public_access=s3.BlockPublicAccess(
                    block_public_acls=True, ignore_public_acls=True, block_public_policy=False,
                    restrict_public_buckets=False,
                ),
            )
            self.site_url = self.bucket.bucket_website_url

    def publish(self, *, config: Mapping[str, Any]) -> s3deploy.BucketDeployment:
        """Deploy ``frontend/`` and ``config.json`` (built from ``config``, tokens allowed); invalidate the CDN."""
        self.deployment = s3deploy.BucketDeployment(
            self,
            "Deploy",
            destination_bucket=self.bucket,
            sources=[
                s3deploy.Source.asset(str(self._frontend_dir), exclude=["**/.DS_Store", "**/__pycache__"]),
                s3deploy.Source.json_data("config.json", dict(config)),
            ],
            distribution=self.distribution,
            distribution_paths=["/*"] if self.distribution else None,
            cache_control=[s3deploy.CacheControl.from_string("no-cache")],
            memory_limit=256,
            prune=True,
            log_group=logs.LogGroup(self, "DeployLogs", retention=self._log_retention,
                                    removal_policy=RemovalPolicy.DESTROY),
        )
        return self.deployment
