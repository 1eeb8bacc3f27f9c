"""The Kubernetes manifests and the images, checked with no cluster and no container
engine: every overlay renders with kustomize, every built-in object validates strictly
against the Kubernetes schemas (KubeRay's pod templates too, as PodTemplates), checkov
finds no failed check in the rendered overlays or the Dockerfile, the YAML lints, and each
image runs its service's module with only its service's libraries (k8s/README.md says
what this proves and what it does not)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32.0"  # the kubectl on our machines; GKE and EKS both offer it
SERVICES = ("gateway", "features", "retrieval", "embedding", "trainer")
IMAGE_TARGETS = {**{s: s for s in SERVICES}, "trainer-gpu": "trainer"}
CHECKOV = Path(sys.prefix) / "tools" / "checkov" / "bin" / "checkov"


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed here: the manifests cannot be rendered")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def _of_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(overlay) if doc["kind"] == kind]


def _named(overlay: str, kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in _of_kind(overlay, kind) if doc["metadata"]["name"] == name)


def _ray_pod_templates(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", cluster["spec"]["headGroupSpec"]["template"]
    for group in cluster["spec"]["workerGroupSpecs"]:
        yield group["groupName"], group["template"]


def _pod_specs(overlay: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in rendered(overlay):
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "RayCluster":
            for group, template in _ray_pod_templates(doc):
                yield f"ray-{group}", template["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_in_object_validates_strictly_against_the_kubernetes_schemas(
    overlay: str,
) -> None:
    checked = []
    for doc in rendered(overlay):
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            # prometheus-operator's kinds have no schema here either: their shape is checked
            # by test_every_metric_the_monitoring_uses_is_one_the_suite_exports.
            assert doc["kind"] in ("ServiceMonitor", "PrometheusRule")
            continue
        if doc["apiVersion"] == "cert-manager.io/v1":
            # No schema for cert-manager's kinds: test_every_pod_has_its_own_certificate.
            assert doc["kind"] == "Certificate"
            continue
        if doc["apiVersion"] == "ray.io/v1":
            # No schema for KubeRay's kinds: their pod templates are validated as PodTemplates.
            assert doc["kind"] == "RayCluster"
            for group, template in _ray_pod_templates(doc):
                wrapped = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"{doc['metadata']['name']}-{group}"},
                    "template": template,
                }
                kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)
                checked.append(f"PodTemplate/{group}")
            continue
        # A kind with no schema raises SchemaNotFoundError: a failure, not a warning.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked.append(f"{doc['kind']}/{doc['metadata']['name']}")
    assert {"Deployment/gateway", "StatefulSet/features", "Deployment/embedding"} <= set(checked)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_no_failed_check_in_the_rendered_overlay(
    overlay: str, tmp_path: Path
) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered(overlay)))
    report = _checkov(["--framework", "kubernetes", "-f", str(manifest)])
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 100
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    # Every skip is an annotation that says why.
    for skipped in report["results"].get("skipped_checks", []):
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped


def test_checkov_finds_no_failed_check_in_the_dockerfile() -> None:
    report = _checkov(["--framework", "dockerfile", "-f", str(ROOT / "Dockerfile")])
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []


def _checkov(arguments: list[str]) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"no checkov at {CHECKOV}: `make setup` installs it")
    done = subprocess.run(
        [str(CHECKOV), *arguments, "--output", "json", "--compact", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report  # type: ignore[no-any-return]


def test_the_yaml_under_k8s_lints() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(K8S / ".yamllint"), str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_profile_with_requests_limits_and_probes(
    overlay: str,
) -> None:
    for name, spec in _pod_specs(overlay):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1000, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert set(resources["requests"]) >= {"cpu", "memory"}, where
            assert set(resources["limits"]) >= {"cpu", "memory"}, where
            if name.startswith("ray-") and container["name"].startswith("ray-"):
                assert resources["requests"] == resources["limits"], where
            elif not name.startswith("ray-"):
                assert "readinessProbe" in container and "livenessProbe" in container, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ray_cluster_has_a_head_that_takes_no_tasks_and_the_trainer_beside_it(
    overlay: str,
) -> None:
    cluster = _named(overlay, "RayCluster", "recsys")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    containers = head["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["ray-head", "trainer"]  # Ray's first
    trainer = containers[1]
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["RAY_ADDRESS"] == "127.0.0.1:6379"
    # The driver reaches its node's raylet through sockets under /tmp/ray: shared.
    mounts = {c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in containers}
    assert mounts["ray-head"]["/tmp"] == mounts["trainer"]["/tmp"]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert groups["gpu"]["minReplicas"] == 0
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "tolerations"
    ]


def test_the_gpu_overlay_runs_the_official_triton_on_a_gpu_and_publishes_for_it() -> None:
    triton = _named("gpu", "Deployment", "embedding")["spec"]["template"]["spec"]
    container = triton["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/tritonserver:26.08-py3"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--grpc-restricted-protocol=model-repository:" in container["args"][0]
    assert triton["nodeSelector"]
    config = _of_kind("gpu", "ConfigMap")[0]["data"]
    assert config["RECSYS_TRAINER_TRITON_PLATFORM"] == "pytorch_libtorch"
    cpu_config = _of_kind("cpu", "ConfigMap")[0]["data"]
    assert "RECSYS_TRAINER_TRITON_PLATFORM" not in cpu_config
    models = _named("gpu", "PersistentVolumeClaim", "recsys-models")["spec"]
    assert models["accessModes"] == ["ReadWriteMany"] and models["storageClassName"]


def test_retrieval_replicas_are_all_listed_ready_or_not() -> None:
    service = _named("cpu", "Service", "retrieval")["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    config = _of_kind("cpu", "ConfigMap")[0]["data"]
    assert config["RECSYS_RETRIEVAL_PEERS"] == "dns:///retrieval:50053"
    assert config["RECSYS_GATEWAY_RETRIEVAL_ADDRESS"] == "dns:///retrieval:50053"


# ---- images ---------------------------------------------------------------------------------


def _stages() -> dict[str, list[dockerfile.Command]]:
    stages: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            current = stages.setdefault(command.value[-1], [])
        current.append(command)
    return stages


def test_each_image_target_runs_its_service_as_uid_1000_from_a_pinned_base() -> None:
    stages = _stages()
    for target, service in IMAGE_TARGETS.items():
        commands = stages[target]
        base = commands[0].value[0]
        while base in stages:  # FROM an earlier stage: that stage's base
            base = stages[base][0].value[0]
        assert ":" in base and not base.endswith(":latest"), target
        assert any(char.isdigit() for char in base.partition(":")[2]), target
        entrypoint = [c for c in commands if c.cmd == "ENTRYPOINT"][-1]
        assert list(entrypoint.value) == ["python", "-m", f"services.{service}"], target
        assert (ROOT / "services" / service / "__main__.py").exists()
        users = [c.value[0] for c in commands if c.cmd == "USER"]
        assert users and users[-1].split(":")[0] == "1000", target
        installs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
        assert f"[{service}]" in installs, target
        assert "apt-get" not in installs and "gcc" not in installs, target


def test_every_file_the_dockerfile_copies_exists_and_reaches_the_build() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    allowed = [line[1:].rstrip("/") for line in ignored if line.startswith("!")]
    copied = [
        source
        for command in dockerfile.parse_file(str(ROOT / "Dockerfile"))
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
        for source in command.value[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), source


def test_the_gateway_image_carries_no_torch_ray_or_faiss() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    heavy = ("torch", "ray", "faiss")
    assert not [d for d in extras["gateway"] if d.startswith(heavy)]
    # And the gateway's code never imports them: its process runs without them.
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {heavy!r}: raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import services.gateway.__main__\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_recsys_variable_the_manifests_set_is_one_a_service_reads(overlay: str) -> None:
    source = "\n".join(
        path.read_text()
        for folder in ("services", "shared")
        for path in (ROOT / folder).rglob("*.py")
    )
    names = set()
    for doc in rendered(overlay):
        if doc["kind"] == "ConfigMap":
            names |= set(doc.get("data", {}))
    for _, spec in _pod_specs(overlay):
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    unread = []
    for name in sorted(n for n in names if n.startswith("RECSYS_")):
        prefixes = ["RECSYS_", "RECSYS_TLS_", *(f"RECSYS_{s.upper()}_" for s in SERVICES)]
        suffixes = [name.removeprefix(p) for p in prefixes if name.startswith(p)]
        if f'"{name}"' not in source and not any(f'"{s}"' in source for s in suffixes):
            unread.append(name)
    assert unread == []


# Triton's own metrics that the monitoring uses; tests/integration/test_embedding_triton.py
# reads them from a running Triton.
TRITON_METRICS = ("nv_inference_queue_duration_us", "nv_inference_request_success")
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "clamp_min",
    "histogram_quantile",
    "time",
    "and",
    "or",
    "unless",
    "without",
    "on",
    "ignoring",
    "max",
    "min",
    "avg",
    "count",
}


def _metric_names(expression: str) -> set[str]:
    bare = re.sub(r"\{[^}]*\}", " ", expression)  # label matchers
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)  # grouping labels
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges
    bare = re.sub(r"<<[^>]*>>", " ", bare)  # prometheus-adapter's template
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if w not in PROMQL_WORDS}


def _exported() -> set[str]:
    from services.trainer.metrics import GAUGES
    from shared.metrics import RPC_HANDLED, RPC_LATENCY, RPC_STARTED

    names = {"up", *GAUGES, *TRITON_METRICS}
    for metric in (RPC_STARTED, RPC_HANDLED):
        names.add(metric._name + ("" if metric._name.endswith("_total") else "_total"))
    names |= {f"{RPC_LATENCY._name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return names


def test_every_metric_the_monitoring_uses_is_one_the_suite_exports() -> None:
    expressions = []
    for doc in _of_kind("gpu", "PrometheusRule"):
        for group in doc["spec"]["groups"]:
            expressions += [rule["expr"] for rule in group["rules"]]
            assert all(rule["alert"] and rule["for"] for rule in group["rules"])
    for doc in _of_kind("gpu", "ConfigMap"):
        if "recsys.json" in doc.get("data", {}):
            dashboard = json.loads(doc["data"]["recsys.json"])
            expressions += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        if "rules.yaml" in doc.get("data", {}):
            for rule in yaml.safe_load(doc["data"]["rules.yaml"])["rules"]:
                expressions += [rule["seriesQuery"], rule["metricsQuery"]]
                served = rule["name"]["as"]
    hpa = _named("gpu", "HorizontalPodAutoscaler", "embedding")["spec"]["metrics"][0]
    assert hpa["pods"]["metric"]["name"] == served  # the adapter makes what the HPA reads
    alerts = {
        r["alert"]
        for d in _of_kind("gpu", "PrometheusRule")
        for g in d["spec"]["groups"]
        for r in g["rules"]
    }
    assert len(alerts) >= 6
    used = set().union(*(_metric_names(e) for e in expressions))
    assert used - _exported() == set()
    assert {"recsys_trainer_events_behind_live", "nv_inference_queue_duration_us"} <= used
    # Every Service with a metrics port has a ServiceMonitor, and it scrapes that port.
    monitored = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in _of_kind("gpu", "ServiceMonitor")
    }
    with_metrics = {
        d["metadata"]["labels"]["app.kubernetes.io/name"]
        for d in _of_kind("gpu", "Service")
        if any(p["name"] == "metrics" for p in d["spec"]["ports"])
    }
    assert with_metrics == monitored


def _container_env(overlay: str, container: dict[str, Any], mounted: Path) -> dict[str, str]:
    """The container's environment; a file it names under a mount is read from `mounted`
    (the test's stand-ins for the Secrets: a key, a certificate, a token file)."""
    config = {}
    for doc in _of_kind(overlay, "ConfigMap"):
        config[doc["metadata"]["name"]] = doc.get("data", {})
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "from-a-secret")
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    for name, value in env.items():
        if name.endswith("_FILE"):
            assert any(value.startswith(m + "/") for m in mounts), f"{name}={value}: not mounted"
            env[name] = str(mounted / value.lstrip("/"))
    return env


def _mounted_secrets(root: Path) -> Path:
    """What the Secrets hold, at their mount paths under `root`."""
    from shared.access import new_token
    from suite.certs import Authority

    Authority.new().issue(root / "etc/recsys/tls", "service")  # tls.crt, tls.key, ca.crt
    (root / "etc/recsys/triton-control").mkdir(parents=True)
    (root / "etc/recsys/triton-control/key").write_text("a-key\n")
    (root / "etc/recsys/tokens").mkdir(parents=True)
    (root / "etc/recsys/tokens/tokens").write_text(new_token("operator", ["admin"])[1] + "\n")
    return root


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_container_starts_from_its_rendered_environment(
    overlay: str, tmp_path: Path
) -> None:
    """Each service's own configuration loads from the container's environment as
    rendered (every value parses: ports, addresses, numbers, the key file), and listens
    where its Service and probes expect it. The Ray head pod's trainer included, which the
    local run leaves out."""
    from services.embedding.config import EmbeddingConfig
    from services.features.config import FeaturesConfig
    from services.gateway.config import GatewayConfig
    from services.retrieval.config import RetrievalConfig
    from services.trainer.config import TrainerConfig

    mounted = _mounted_secrets(tmp_path)
    configs: dict[str, Any] = {
        "gateway": GatewayConfig,
        "features": FeaturesConfig,
        "retrieval": RetrievalConfig,
        "triton": EmbeddingConfig,
        "trainer": TrainerConfig,
    }
    loaded = {}
    for _, spec in _pod_specs(overlay):
        for container in spec["containers"]:
            config = configs.get(container["name"])
            if config is None or "command" in container:  # Ray's own, or the official Triton
                continue
            env = _container_env(overlay, container, mounted)
            loaded[container["name"]] = (config.from_env(env), container)
    expected = set(configs) if overlay == "cpu" else set(configs) - {"triton"}
    assert set(loaded) == expected
    for name, (config, container) in loaded.items():
        server = getattr(config, "server", config)
        declared = {p["containerPort"] for p in container["ports"]}
        assert server.host == "0.0.0.0" and server.port in declared, name
        assert server.metrics_port in declared, name
    trainer = loaded["trainer"][0]
    assert trainer.ray_address == "127.0.0.1:6379"
    assert trainer.job.triton_control_key == "a-key"
    expected_platform = "pytorch_libtorch" if overlay == "gpu" else "python"
    assert trainer.job.publish.triton_variant == expected_platform


# The fields of cert-manager's Certificate (cert-manager.io/v1) that the manifests may use;
# a typo in one would be ignored by no schema here, so it fails this test instead.
CERTIFICATE_FIELDS = {
    "secretName",
    "commonName",
    "dnsNames",
    "duration",
    "renewBefore",
    "privateKey",
    "usages",
    "issuerRef",
}
PRIVATE_KEY_FIELDS = {"algorithm", "size", "rotationPolicy", "encoding"}
USAGES = {"server auth", "client auth", "digital signature", "key encipherment"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_has_its_own_certificate_and_probes_that_need_none(overlay: str) -> None:
    """Each pod mounts, where RECSYS_TLS_* points, the Secret of a Certificate that names
    the Services selecting it (clients check those names); gRPC probes go to the
    plaintext health port the container is told (a probe has no client certificate)."""
    certificates = {c["spec"]["secretName"]: c for c in _of_kind(overlay, "Certificate")}
    assert len(certificates) == len(SERVICES)
    for certificate in certificates.values():
        spec = certificate["spec"]
        assert set(spec) <= CERTIFICATE_FIELDS, set(spec) - CERTIFICATE_FIELDS
        assert set(spec["privateKey"]) <= PRIVATE_KEY_FIELDS
        assert {"server auth", "client auth"} <= set(spec["usages"]) <= USAGES
        assert spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
    config = _of_kind(overlay, "ConfigMap")[0]["data"]
    assert config["RECSYS_TLS_CERT_FILE"] == "/etc/recsys/tls/tls.crt"
    services = _of_kind(overlay, "Service")
    for name, spec in _pod_specs(overlay):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        labels = _pod_labels(overlay, name)
        selecting = {
            s["metadata"]["name"]
            for s in services
            if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
        }
        for container in spec["containers"]:
            if "envFrom" not in container:
                continue  # Ray's own head container: it calls no service
            mount = next(
                m for m in container["volumeMounts"] if m["mountPath"] == "/etc/recsys/tls"
            )
            secret = volumes[mount["name"]]["secret"]["secretName"]
            names = set(certificates[secret]["spec"]["dnsNames"])
            assert selecting <= names, (name, selecting, names)
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            health = [v for k, v in env.items() if k.endswith("_HEALTH_PORT")]
            for key in ("startupProbe", "readinessProbe"):
                probe = container.get(key, {})
                if "grpc" in probe:
                    assert health == [str(probe["grpc"]["port"])], (name, key)


# The attributes of cert-manager's CSI driver (csi.cert-manager.io) the manifests may use.
CSI_ATTRIBUTES = {
    "issuer-name",
    "issuer-kind",
    "common-name",
    "dns-names",
    "ip-sans",
    "key-usages",
    "fs-group",
    "duration",
    "renew-before",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_container_speaks_tls_with_a_certificate_naming_its_pod(overlay: str) -> None:
    """Ray's nodes dial each other by IP: each Ray pod's certificate comes from cert-manager's
    CSI driver for its own pod IP (and 127.0.0.1, where the trainer and the autoscaler
    reach the head), from the Certificates' Issuer; every Ray container has RAY_USE_TLS."""
    issuers = {c["spec"]["issuerRef"]["name"] for c in _of_kind(overlay, "Certificate")}
    cluster = _named(overlay, "RayCluster", "recsys")
    for group, template in _ray_pod_templates(cluster):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        attributes = volumes["ray-tls"]["csi"]["volumeAttributes"]
        keys = {k.removeprefix("csi.cert-manager.io/") for k in attributes}
        assert keys <= CSI_ATTRIBUTES, keys - CSI_ATTRIBUTES
        assert attributes["csi.cert-manager.io/issuer-name"] in issuers
        assert set(attributes["csi.cert-manager.io/ip-sans"].split(",")) == {
            "${POD_IP}",
            "127.0.0.1",
        }
        for container in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["RAY_USE_TLS"] == "1", (group, container["name"])
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            for name in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"):
                assert str(Path(env[name]).parent) in mounted
    autoscaler = {e["name"]: e.get("value") for e in cluster["spec"]["autoscalerOptions"]["env"]}
    assert autoscaler["RAY_USE_TLS"] == "1"


def _pod_labels(overlay: str, name: str) -> dict[str, str]:
    for doc in rendered(overlay):
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == name:
            return dict(doc["spec"]["template"]["metadata"]["labels"])
        if doc["kind"] == "RayCluster":
            for group, template in _ray_pod_templates(doc):
                if name == f"ray-{group}":
                    node = "head" if group == "head" else "worker"
                    return {**template["metadata"]["labels"], "ray.io/node-type": node}
    raise AssertionError(name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_the_learner_writes_is_on_a_volume_every_ray_pod_shares(overlay: str) -> None:
    """The trainer's learner actor and its full retrains run on whichever Ray worker has
    room, with the configuration the trainer container read: each folder it names for
    writing (its state, the model store) must be the same claim, at the same path, in the
    trainer container and in every worker group (one machine's test run cannot tell)."""
    cluster = _named(overlay, "RayCluster", "recsys")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    trainer = next(c for c in head["containers"] if c["name"] == "trainer")
    config = _of_kind(overlay, "ConfigMap")[0]["data"]
    env = {**config, **{e["name"]: e.get("value", "") for e in trainer["env"]}}
    written = [env["RECSYS_TRAINER_STATE_DIR"], env["RECSYS_MODEL_DIR"]]

    def claim_at(spec: dict[str, Any], container: dict[str, Any], path: str) -> str:
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in container["volumeMounts"]:
            if path == mount["mountPath"] or path.startswith(mount["mountPath"] + "/"):
                claim = volumes[mount["name"]].get("persistentVolumeClaim", {})
                return f"{mount['mountPath']} <- {claim.get('claimName', 'not a claim')}"
        return "not mounted"

    for path in written:
        expected = claim_at(head, trainer, path)
        assert expected.endswith("recsys-models"), (path, expected)
        for group in cluster["spec"]["workerGroupSpecs"]:
            spec = group["template"]["spec"]
            assert claim_at(spec, spec["containers"][0], path) == expected, (group, path)
