"""Security and consistency properties of infra/, read from the parsed HCL (no terraform binary here).

checkov runs in .ci/static_checks.sh; these tests pin the properties the issue names directly, so a
change that opens a port, drops encryption or widens the role fails here with a readable message:
no ingress (AWS) / IAP-only ingress (GCP), IMDSv2, encrypted volumes and buckets, private buckets,
least-privilege IAM, a validated instance type, the same variables on both clouds, and a bootstrap
that names images and vidcore subcommands that exist in this repository.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CLOUDS = ("aws", "gcp")
TEMPLATE = INFRA / "templates" / "bootstrap.sh.tftpl"
AWS_TYPES = {"g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge", "g6e.8xlarge", "g6e.16xlarge", "g6e.12xlarge",
             "p5.4xlarge", "p4d.24xlarge"}
BACKENDS = {"latte-shapes", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "hunyuan-video-t2v",
            "hunyuan-video-i2v"}
IAP_RANGE = "35.235.240.0/20"
META = {"__is_block__", "__comments__", "__start_line__", "__end_line__", "__inline_comments__"}


# -- parsing: python-hcl2 (quoted strings, __is_block__) and checkov's fork (values in 1-lists) -------
def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _norm(value: Any, legacy: bool) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in META:
                continue
            if legacy and isinstance(item, list) and len(item) == 1 and not isinstance(item[0], dict):
                item = item[0]  # the fork wraps every attribute value in a list
            out[_unquote(key)] = _norm(item, legacy)
        return out
    if isinstance(value, list):
        return [_norm(v, legacy) for v in value]
    return _unquote(value)


def load(path: Path) -> dict:
    with path.open() as f:
        raw = hcl2.load(f)
    legacy = "__is_block__" not in json.dumps(raw)  # python-hcl2 marks blocks; the fork does not
    return _norm(raw, legacy)


def one(value: Any) -> Any:
    """A block or map: the fork gives a list of one dict, python-hcl2 a dict or a list of one."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def statements(doc: dict) -> list[dict]:
    """A policy document's statement blocks, those inside `dynamic "statement"` included."""
    found = list(as_list(doc.get("statement", [])))
    for dynamic in as_list(doc.get("dynamic", [])):
        for block in as_list(dynamic.get("statement", [])):
            found += as_list(block["content"])
    return found


class Config:
    """All blocks of one Terraform root: resources[type][name], data[type][name], variables[name]."""

    def __init__(self, cloud: str):
        self.dir = INFRA / cloud
        self.files = sorted(self.dir.glob("*.tf"))
        self.text = "\n".join(f.read_text() for f in self.files)
        self.resources: dict[str, dict[str, dict]] = {}
        self.data: dict[str, dict[str, dict]] = {}
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.terraform: list[dict] = []
        for f in self.files:
            doc = load(f)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in doc.get(kind, []):
                    for rtype, named in block.items():
                        for name, body in named.items():
                            target.setdefault(rtype, {})[name] = body
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            self.terraform += doc.get("terraform", [])

    def of(self, rtype: str) -> dict[str, dict]:
        return self.resources.get(rtype, {})


@pytest.fixture(scope="module", params=CLOUDS)
def cfg(request) -> Config:
    return Config(request.param)


@pytest.fixture(scope="module")
def aws() -> Config:
    return Config("aws")


@pytest.fixture(scope="module")
def gcp() -> Config:
    return Config("gcp")


def cli_subcommands() -> dict[str, argparse.ArgumentParser]:
    from vidcore.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("vidcore's parser has no subcommands")


# -- both clouds -------------------------------------------------------------------------------------
def test_every_file_parses_and_requires_terraform_15(cfg):
    assert cfg.files
    required = [one(t).get("required_version") for t in cfg.terraform]
    assert ">= 1.5" in required


def test_the_same_variables_on_both_clouds(aws, gcp):
    def shared(cfg: Config) -> dict[str, str]:
        text = (cfg.dir / "variables.tf").read_text().split("only ---")[0]
        names = re.findall(r'^variable "(\w+)"', text, re.M)
        return {n: str(cfg.variables[n].get("type")) for n in names}

    assert shared(aws) == shared(gcp)
    assert {"instance_type", "use_spot", "image", "backend", "model_volume_gb", "bucket_name"} <= set(shared(aws))


def test_instance_type_is_validated(aws, gcp):
    def allowed(cfg: Config) -> set[str]:
        condition = one(cfg.variables["instance_type"]["validation"])["condition"]
        return set(re.findall(r"['\"]([a-z0-9.-]+)['\"]", condition.split("contains(")[1].split("]")[0]))

    assert allowed(aws) == AWS_TYPES
    assert aws.variables["instance_type"]["default"] in AWS_TYPES
    gcp_types = allowed(gcp)
    assert gcp_types and all(re.fullmatch(r"(g2-standard|a2-ultragpu|a3-highgpu)-\w+", t) for t in gcp_types)
    assert gcp.variables["instance_type"]["default"] in gcp_types


def test_image_variable_accepts_exactly_the_tags_build_sh_makes(cfg):
    condition = one(cfg.variables["image"]["validation"])["condition"]
    pattern = re.search(r'regex\("(.+?)",\s*var\.image', condition).group(1).replace("\\\\", "\\")
    out = subprocess.run(["bash", str(ROOT / "docker" / "build.sh"), "--dry-run", "--registry",
                          "123456789012.dkr.ecr.us-east-1.amazonaws.com"], capture_output=True, text=True,
                         check=True).stdout
    tags = re.findall(r"^image: (\S+)$", out, re.M)
    assert len(tags) == 5
    for tag in tags:
        assert re.fullmatch(pattern, tag), tag
    for bad in ("vidcore:latest", "registry.example/vidcore:0.1.0-wan", "registry.example/other:0.1.0-all"):
        assert not re.fullmatch(pattern, bad), bad
    example = load(cfg.dir / "terraform.tfvars.example")
    assert re.fullmatch(pattern, example["image"])
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert example["image"].rsplit(":", 1)[1].startswith(version + "-"), "tfvars example names an old version"


def test_backend_variable_names_real_backends(cfg):
    condition = one(cfg.variables["backend"]["validation"])["condition"]
    listed = set(re.findall(r"['\"]([a-z0-9.-]+)['\"]", condition.split("contains(")[1].split("]")[0]))
    assert listed == BACKENDS
    assert cfg.variables["backend"]["default"] in listed
    from vidcore.plugins import backends

    registered = set(backends())
    for family in ("wan2.2-", "hunyuan-video-", "latte-"):
        if any(name.startswith(family) for name in registered):
            missing = {b for b in listed if b.startswith(family)} - registered
            assert not missing, f"infra offers backends the installed plugin does not register: {missing}"


def test_no_hard_coded_secrets_or_machine_images(cfg):
    for pattern in (r"AKIA[0-9A-Z]{16}", r"\bhf_[A-Za-z0-9]{20,}", r"ami-[0-9a-f]{8,}", r"(?i)password\s*="):
        assert not re.search(pattern, cfg.text), pattern
    no_keys = r"\bkey_name\s*=|(?<![-\w])ssh-keys\s*="
    assert not re.search(no_keys, cfg.text), "no SSH key pair: access is SSM / IAP only"


def test_checkov_skips_carry_a_reason():
    skips = []
    for path in INFRA.rglob("*.tf"):
        for m in re.finditer(r"#\s*checkov:skip=([^\n]*)", path.read_text()):
            skips.append((path.name, m.group(1)))
    for name, skip in skips:
        check, _, reason = skip.partition(":")
        assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", check), (name, skip)
        assert len(reason.split()) >= 8, f"{name}: skip {check} needs a written reason"


# -- AWS ---------------------------------------------------------------------------------------------
def test_aws_has_no_ingress_anywhere(aws):
    assert "aws_security_group_rule" not in aws.resources
    assert "aws_vpc_security_group_ingress_rule" not in aws.resources
    for name, sg in {**aws.of("aws_security_group"), **aws.of("aws_default_security_group")}.items():
        assert "ingress" not in sg, f"security group {name} has ingress rules"
    egress = as_list(aws.of("aws_security_group")["host"]["egress"])
    assert {(int(e["from_port"]), int(e["to_port"]), e["protocol"]) for e in egress} <= {
        (443, 443, "tcp"), (80, 80, "tcp")}
    host = aws.of("aws_instance")["host"]
    assert host["associate_public_ip_address"] is False
    for subnet in aws.of("aws_subnet").values():
        assert subnet["map_public_ip_on_launch"] is False


def test_aws_imdsv2_required(aws):
    options = one(aws.of("aws_instance")["host"]["metadata_options"])
    assert options["http_tokens"] == "required"
    assert int(options["http_put_response_hop_limit"]) == 1


def test_aws_volumes_encrypted_gp3(aws):
    root = one(aws.of("aws_instance")["host"]["root_block_device"])
    assert root["encrypted"] is True and root["volume_type"] == "gp3" and "aws_kms_key" in root["kms_key_id"]
    models = aws.of("aws_ebs_volume")["models"]
    assert models["encrypted"] is True and models["type"] == "gp3" and "aws_kms_key" in models["kms_key_id"]
    assert one(aws.of("aws_kms_key")["this"])["enable_key_rotation"] is True


def test_aws_bucket_private_encrypted_versioned_tls_only(aws):
    block = aws.of("aws_s3_bucket_public_access_block")["outputs"]
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[flag] is True, flag
    rule = one(one(aws.of("aws_s3_bucket_server_side_encryption_configuration")["outputs"]["rule"])
               ["apply_server_side_encryption_by_default"])
    assert rule["sse_algorithm"] == "aws:kms"
    versioning = one(aws.of("aws_s3_bucket_versioning")["outputs"]["versioning_configuration"])
    assert versioning["status"] == "Enabled"
    assert "aws_s3_bucket_acl" not in aws.resources
    tls = [s for s in as_list(aws.data["aws_iam_policy_document"]["bucket"]["statement"])
           if s.get("effect") == "Deny"]
    assert tls and one(tls[0]["condition"])["variable"] == "aws:SecureTransport"
    assert as_list(one(tls[0]["condition"])["values"]) == ["false"]


def test_aws_iam_is_least_privilege(aws):
    assert "aws_iam_role_policy_attachment" not in aws.resources, "no managed policies: one inline policy"
    assert "aws_iam_policy_attachment" not in aws.resources
    for doc_name, doc in aws.data["aws_iam_policy_document"].items():
        for st in statements(doc):
            if st.get("effect", "Allow") != "Allow":
                continue
            for action in as_list(st["actions"]):
                assert "*" not in action, f"{doc_name}: wildcard action {action}"
    actions_of = {}
    for st in statements(aws.data["aws_iam_policy_document"]["host"]):
        for action in as_list(st["actions"]):
            actions_of[action] = as_list(st["resources"])
    optional = {a for a in actions_of if a.startswith("ecr:")}
    assert optional <= {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
                        "ecr:GetAuthorizationToken"}
    for action in optional - {"ecr:GetAuthorizationToken"}:
        assert actions_of[action] == ["${var.ecr_repository_arn}"]
    services = {a.split(":")[0] for a in actions_of}
    assert services <= {"ssm", "ssmmessages", "s3", "kms", "ecr"}, services
    assert {a for a in actions_of if a.startswith("ssm:")} == {"ssm:UpdateInstanceInformation", "ssm:GetParameter"}
    assert actions_of["ssm:GetParameter"] == ["${aws_ssm_parameter.api_key.arn}"], "the server's key, no other"
    for action, resources in actions_of.items():
        if action.startswith("s3:"):
            assert all(r.startswith("${aws_s3_bucket.outputs.arn}") for r in resources), (action, resources)
        if action in ("s3:PutObject", "s3:AbortMultipartUpload"):
            assert resources == ["${aws_s3_bucket.outputs.arn}/*"]
        if action.startswith("kms:"):
            assert resources == ["${aws_kms_key.this.arn}"]
    assert not any(a.startswith(("s3:Delete", "s3:GetObject", "iam:")) for a in actions_of)
    # the key policy is an HCL object: no wildcard actions there either
    assert not re.search(r'"kms:\*"|"\*:\*"|Action\s*=\s*"\*"', aws.text)


def test_aws_api_key_is_a_generated_secure_string_read_only_through_ssm(aws):
    param = aws.of("aws_ssm_parameter")["api_key"]
    assert param["type"] == "SecureString" and param["key_id"] == "${aws_kms_key.this.arn}"
    assert param["value"] == "${random_password.api_key.result}"
    assert int(aws.of("random_password")["api_key"]["length"]) >= 32
    decrypt = [st for st in statements(aws.data["aws_iam_policy_document"]["host"]) if st.get("sid") == "DecryptApiKey"]
    assert decrypt and as_list(decrypt[0]["actions"]) == ["kms:Decrypt"]
    assert as_list(one(decrypt[0]["condition"])["values"]) == ["ssm.${var.region}.amazonaws.com"]


def test_aws_uses_the_latest_deep_learning_base_gpu_ami(aws):
    ami = aws.data["aws_ami"]["dlami"]
    assert ami["most_recent"] is True and as_list(ami["owners"]) == ["amazon"]
    names = [v for f in as_list(ami["filter"]) if f["name"] == "name" for v in as_list(f["values"])]
    assert names and all("Deep Learning Base" in n and "GPU" in n for n in names)
    assert aws.of("aws_instance")["host"]["ami"] == "${data.aws_ami.dlami.id}"


def test_aws_spot_is_optional_and_outputs_connect_command(aws):
    dynamic = one(aws.of("aws_instance")["host"]["dynamic"])
    assert "var.use_spot" in one(dynamic["instance_market_options"])["for_each"]
    assert {"instance_id", "connect_command", "bucket"} <= set(aws.outputs)
    command = aws.outputs["connect_command"]["value"]
    assert command.startswith("aws ssm start-session") and "--target ${aws_instance.host.id}" in command
    tunnel = aws.outputs["tunnel_command"]["value"]
    assert tunnel.startswith("aws ssm start-session") and "--document-name AWS-StartPortForwardingSession" in tunnel
    assert "portNumber=8000,localPortNumber=8000" in tunnel
    assert "--with-decryption" in aws.outputs["api_key_command"]["value"]


# -- GCP ---------------------------------------------------------------------------------------------
def test_gcp_ingress_is_denied_except_iap_ssh(gcp):
    rules = gcp.of("google_compute_firewall")
    ingress_allows = {n: r for n, r in rules.items() if r.get("direction") == "INGRESS" and "allow" in r}
    for name, rule in ingress_allows.items():
        sources = [IAP_RANGE if s == "${local.iap_range}" else s for s in as_list(rule["source_ranges"])]
        assert sources == [IAP_RANGE], f"{name} admits traffic from {sources}"
        assert as_list(one(rule["allow"])["ports"]) == ["22"]
        assert "var.enable_iap_ssh" in str(rule.get("count"))
    assert gcp.locals["iap_range"] == IAP_RANGE
    denies = [r for r in rules.values() if r.get("direction") == "INGRESS" and "deny" in r]
    assert denies and as_list(denies[0]["source_ranges"]) == ["0.0.0.0/0"]
    nic = one(gcp.of("google_compute_instance")["host"]["network_interface"])
    assert "access_config" not in nic, "no external IP"


def test_gcp_shielded_vm_without_keys_or_serial_port(gcp):
    vm = gcp.of("google_compute_instance")["host"]
    shielded = one(vm["shielded_instance_config"])
    assert shielded["enable_vtpm"] is True and shielded["enable_integrity_monitoring"] is True
    metadata = one(vm["metadata"])
    assert metadata["block-project-ssh-keys"] == "true" and metadata["serial-port-enable"] == "false"
    assert metadata["enable-oslogin"] == "TRUE"
    assert vm["can_ip_forward"] is False
    assert "google_compute_default_service_account" not in gcp.data


def test_gcp_disks_and_bucket_encrypted_and_private(gcp):
    vm = gcp.of("google_compute_instance")["host"]
    assert "google_kms_crypto_key" in one(vm["boot_disk"])["kms_key_self_link"]
    assert "google_kms_crypto_key" in one(vm["attached_disk"])["kms_key_self_link"]
    disk = gcp.of("google_compute_disk")["models"]
    assert "google_kms_crypto_key" in one(disk["disk_encryption_key"])["kms_key_self_link"]
    bucket = gcp.of("google_storage_bucket")["outputs"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert one(bucket["versioning"])["enabled"] is True
    assert "google_kms_crypto_key" in one(bucket["encryption"])["default_kms_key_name"]
    assert "allUsers" not in gcp.text and "allAuthenticatedUsers" not in gcp.text


def test_gcp_service_account_is_least_privilege(gcp):
    for kind in ("google_project_iam_member", "google_project_iam_binding", "google_project_iam_policy"):
        assert kind not in gcp.resources, f"{kind}: no project-wide roles"
    kinds = ("google_storage_bucket_iam_member", "google_artifact_registry_repository_iam_member")
    roles = {r["role"] for kind in kinds for r in gcp.of(kind).values()}
    assert roles == {"roles/storage.objectCreator", "roles/storage.legacyBucketReader",
                     "roles/artifactregistry.reader"}
    for member in gcp.of("google_storage_bucket_iam_member").values():
        assert member["bucket"] == "${google_storage_bucket.outputs.name}"
        assert member["member"] == "serviceAccount:${google_service_account.host.email}"
    secrets = gcp.of("google_secret_manager_secret_iam_member")
    assert [(m["secret_id"], m["role"], m["member"]) for m in secrets.values()] == [
        ("${google_secret_manager_secret.api_key.id}", "roles/secretmanager.secretAccessor",
         "serviceAccount:${google_service_account.host.email}")], "the server's key, no other secret"
    scheduling = one(gcp.of("google_compute_instance")["host"]["scheduling"])
    assert "var.use_spot" in str(scheduling["provisioning_model"])
    assert "--tunnel-through-iap" in gcp.outputs["connect_command"]["value"]
    tunnel = gcp.outputs["tunnel_command"]["value"]
    assert "--tunnel-through-iap" in tunnel and tunnel.endswith("-- -N -L 8000:127.0.0.1:8000")  # SSH's port 22
    version = gcp.of("google_secret_manager_secret_version")["api_key"]
    assert version["secret_data"] == "${random_password.api_key.result}"
    assert gcp.outputs["api_key_command"]["value"].startswith("gcloud secrets versions access latest")


# -- the bootstrap -------------------------------------------------------------------------------------
def test_bootstrap_variables_are_all_supplied(cfg):
    placeholders = set(re.findall(r"(?<!\$)\$\{(\w+)\}", TEMPLATE.read_text()))
    call = cfg.text.split("templatefile(")[1].split("\n  })")[0]
    given = set(re.findall(r"^\s*(\w+)\s*=", call, re.M))
    assert placeholders == given
    assert "bootstrap.sh.tftpl" in cfg.text


def test_bootstrap_runs_real_subcommands_with_the_image_layout():
    text = TEMPLATE.read_text()
    commands = cli_subcommands()
    used = re.findall(r"vidcore-run ([a-z]\w*)", text)
    assert "doctor" in used
    assert set(used) <= set(commands), set(used) - set(commands)
    serve = re.search(r"\$IMAGE (serve .*?)\n(?!\s)", text.replace("\\\\\n", " "), re.S).group(1).split()
    serve_flags = {opt for a in commands["serve"]._actions for opt in a.option_strings}
    for flag in serve:
        if flag.startswith("--"):
            assert flag in serve_flags, flag
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    volume = re.search(r"^VOLUME \[(.+)\]", dockerfile, re.M).group(1)
    for target in re.findall(r"-v \S+:(/\w+)", text):
        assert f'"{target}"' in volume, target
    assert "--gpus all" in text and "--privileged" not in text and "--network host" not in text
    assert "docker pull" in text and "nvidia-ctk" in text and "nvidia-container-toolkit" in text
    assert re.search(r"\$\{prompt_b64\}", text) and "base64 -d" in text, "the prompt reaches bash base64-encoded"


def test_bootstrap_starts_the_server_on_loopback_with_the_key_from_the_secret_store(cfg):
    text = TEMPLATE.read_text()
    assert "systemctl enable vidcore-serve.service" in text and "systemctl restart vidcore-serve.service" in text
    unit = text.split("/etc/systemd/system/vidcore-serve.service <<'EOF'")[1].split("\nEOF")[0]
    assert "ExecStart=/usr/local/bin/vidcore-serve-start" in unit and "Restart=on-failure" in unit
    assert "WantedBy=multi-user.target" in unit  # and at every boot
    start = text.split("cat > /usr/local/bin/vidcore-serve-start <<EOF")[1].split("\nEOF")[0]
    assert "serve --host 0.0.0.0 --port 8000" in start  # inside the container; published on loopback only:
    runs = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("mkdir ", "install ")))
    published = re.findall(r"(?<![\w-])(?:-p|--publish)[ =](\S+)", runs)
    assert published == ["127.0.0.1:8000:8000"], published
    assert "--network host" not in text and "--net=host" not in text
    # the key: read from the cloud's secret store at every start into a root-only env file, never a flag
    assert "key=\"\\$(${api_key_command})\"" in start and "umask 077" in start
    assert "--env-file /run/vidcore/serve.env" in start and "--api-key" not in text
    call = cfg.text.split("templatefile(")[1].split("\n  })")[0]
    command = re.search(r'api_key_command\s*=\s*"([^"]+)"', call).group(1)
    assert command.startswith(("aws ssm get-parameter", "gcloud secrets versions access latest")), command
    assert "random_password.api_key.result" not in call, "the key itself never enters the user data"
    # the first video goes through the API, as a client's would
    first = text.split("cat > /usr/local/bin/vidcore-first-video <<'EOF'")[1].split("\nEOF")[0]
    assert "/v1/videos" in first and "/content" in first and "/health/ready" in first
