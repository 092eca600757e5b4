"""Reading a synthesized template in the tests: the Lambda's environment, the host's init, policies, config.json."""

from __future__ import annotations

import json

from infra.host import INSTANCE_LOGICAL_ID


def lambda_env(synth) -> dict:
    fn = next(f for f in synth.of_type("AWS::Lambda::Function").values()
              if f["Properties"].get("Handler") == "lambda_fn.handler.handler")
    return fn["Properties"]["Environment"]["Variables"]


def init_config(synth, resource: str = INSTANCE_LOGICAL_ID) -> dict:
    """The cfn-init config on the host resource: the instance (http), or the Auto Scaling group (sqs)."""
    return synth.resources[resource]["Metadata"]["AWS::CloudFormation::Init"]["config"]


def install_env(synth, resource: str = INSTANCE_LOGICAL_ID) -> dict:
    return init_config(synth, resource)["commands"]["10-install-aipm"]["env"]


def as_text(value) -> str:
    """A template value (string or Fn::Join of parts) as text, tokens shown as their JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(as_text(p) for p in parts)
    return json.dumps(value, sort_keys=True)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def secret_reads(synth, role_prefix: str) -> list[str]:
    """The resources the role may GetSecretValue on, each as JSON text, sorted."""
    return sorted(json.dumps(r) for s in policy_of_role(synth, role_prefix)
                  if "secretsmanager:GetSecretValue" in as_list(s["Action"]) for r in as_list(s["Resource"]))


def secret_refs(synth, *description_words: str) -> list[str]:
    return sorted(json.dumps({"Ref": logical(synth, "AWS::SecretsManager::Secret", w)}) for w in description_words)


def logical(synth, type_: str, description_word: str) -> str:
    matches = [k for k, v in synth.of_type(type_).items()
               if description_word.lower() in v["Properties"].get("Description", "").lower()]
    assert len(matches) == 1, (description_word, matches)
    return matches[0]


def role_id(synth, prefix: str) -> str:
    (name,) = [k for k in synth.of_type("AWS::IAM::Role") if k.startswith(prefix)]
    return name


def policy_of_role(synth, prefix: str) -> list[dict]:
    role = role_id(synth, prefix)
    statements = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    assert statements, f"{role} has no policy"
    return statements


def config_json(synth) -> dict:
    """config.json as BucketDeployment will write it: each deploy-time marker replaced by its value's text."""
    deployment = synth.one("Custom::CDKBucketDeployment")["Properties"]
    keys = [as_text(k) for k in deployment["SourceObjectKeys"]]
    markers = {k: v for source in deployment["SourceMarkers"] for k, v in source.items()}
    for path in synth.outdir.iterdir():
        if path.is_dir() and path.name.startswith("asset.") and (path / "config.json").exists() \
                and any(path.name.removeprefix("asset.") in k for k in keys):
            text = (path / "config.json").read_text()
            for marker, value in markers.items():
                # Markers stand unquoted in the file; their values carry the JSON quotes (json_data escaping).
                text = text.replace(marker, json.dumps(as_text(value).removeprefix('"').removesuffix('"')))
            return json.loads(text)
    raise AssertionError("config.json asset not found in the cloud assembly")
