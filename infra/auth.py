"""Sign-in for the web UI: a Cognito user pool, its hosted-UI domain and a public app client (code flow + PKCE).

Owns who can sign in (users an administrator creates; no self sign-up) and where the hosted UI sends them back
(the website, which is also the sign-out URL). The browser runs the authorization-code flow with PKCE (S256) against the
hosted UI; the client has no secret (a page cannot keep one). The Lambda verifies the tokens against the pool's JWKS;
nothing here knows about the API.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, Fn, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from constructs import Construct

SCOPES = ("openid", "email", "profile")


class Auth(Construct):
    """``user_pool``, ``client``, ``domain`` and ``domain_url`` (``https://<prefix>.auth.<region>.amazoncognito.com``)."""

    def __init__(self, scope: Construct, id_: str, *, site_url: str, domain_prefix: str | None) -> None:
        super().__init__(scope, id_)
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12, require_lowercase=True, require_uppercase=True, require_digits=True,
                require_symbols=True, temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Unique per account and region by default; a second stack in the same account sets cognitoDomainPrefix.
        prefix = domain_prefix or Fn.join("-", ["aipm", Aws.ACCOUNT_ID])
        self.domain = self.user_pool.add_domain(
            "HostedUi", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=prefix)
        )
        self.domain_url = self.domain.base_url()
        self.client = self.user_pool.add_client(
            "Web",
            generate_secret=False,  # a browser cannot keep a secret: authorization code + PKCE instead
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True, implicit_code_grant=False),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=[site_url + "/", site_url + "/index.html"],
                logout_urls=[site_url + "/", site_url + "/index.html"],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            enable_token_revocation=True,  # sign-out revokes the refresh token (/oauth2/revoke)
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(7),
        )
