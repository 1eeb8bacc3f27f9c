"""Runs the pods of a rendered overlay as local processes, as the kubelet would run them:
each container's command (its image's ENTRYPOINT, from the Dockerfile target the image is
named after, unless the manifest gives one) and args, its environment from the ConfigMaps
and Secrets it names and its own `env`, and its declared ports, exactly as rendered.

What a cluster gives a pod is given here by mapping, never by editing a manifest:
- each pod gets its own loopback address (127.0.10.N), which stands for its pod IP, so
  replicas share a port as pods do; a value of 0.0.0.0 (listen everywhere) is that address;
- a Service name in a value (`features:50052`, `dns:///retrieval:50053`) becomes the
  addresses of the pods the Service selects, at their target ports (`ipv4:a:p,b:p` for
  several, as cluster DNS gives a headless Service's records);
- an absolute path in a value lies under the pod's own root folder, where each volume
  mount is a link to the volume's folder (one per claim, shared by every pod that mounts
  it; one per pod for an emptyDir or a StatefulSet's claim template; a Secret's keys as
  files; for cert-manager's CSI driver, a certificate of the pod's own from the test's
  CA).
Readiness is each container's own readinessProbe (gRPC health, HTTP GET or TCP).

A KubeRay `RayCluster` gives a head pod and its worker groups' pods. Their first container
is Ray's, which KubeRay commands (`ray start` with the group's rayStartParams; a worker
joins the head's Service at its GCS port); here it is run as KubeRay would run it, with
what one machine needs: every Ray node on 127.0.0.1 (Ray binds to loopback only there,
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in each Ray pod's containers, the workers joined
through tests/e2e/ray_worker_node.py), free ports where KubeRay's defaults would collide
between nodes, no dashboard (KubeRay's in-tree autoscaler is not run), and a short temp
folder for the pod's /tmp/ray (Ray's unix socket paths are limited in length). The
containers after Ray's run as rendered. Its readiness is its GCS port (head) or raylet
port (worker)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile

from services.launcher import is_serving
from suite.certs import Authority
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
POD_NETWORK = "127.0.10."
RAY_NODE_IP = "127.0.0.1"
CERT_MANAGER_CSI = "csi.cert-manager.io"
ISSUER = "recsys-issuer"  # the Issuer the overlays' certificates come from
RAY = [str(Path(sys.executable).parent / "ray")]
RAY_JOINING = [sys.executable, str(ROOT / "tests" / "e2e" / "ray_worker_node.py")]


def image_entrypoints() -> dict[str, list[str]]:
    """Each Dockerfile target's ENTRYPOINT, by target name."""
    entrypoints: dict[str, list[str]] = {}
    stage = ""
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            stage = command.value[-1]
        elif command.cmd == "ENTRYPOINT":
            entrypoints[stage] = list(command.value)
    return entrypoints


def image_target(image: str) -> str:
    """REGISTRY/recsys-gateway:0.1.0 -> gateway."""
    name = image.rpartition("/")[2].partition(":")[0]
    return name.removeprefix("recsys-")


@dataclass
class Pod:
    name: str  # e.g. retrieval-1
    ip: str
    labels: dict[str, str]
    spec: dict[str, Any]
    claims: dict[str, str]  # volume name -> claim folder key, for claim templates
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ray: RayNode | None = None  # a pod of a RayCluster: its first container is Ray's


@dataclass
class RayNode:
    head: bool
    start_params: dict[str, str]
    gcs_port: int
    temp_dir: str = ""
    readiness_port: int = 0


class LocalCluster:
    """The pods of `workloads` (Deployments and StatefulSets by name, in start order) of a
    rendered overlay, under `root`; `secrets`: the Secrets' data a user creates beside
    the overlay."""

    def __init__(
        self,
        documents: tuple[dict[str, Any], ...],
        root: Path,
        secrets: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.documents = documents
        self.root = root
        self.secrets = secrets
        self.config_maps = {
            d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"
        }
        self.services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
        self.pods: list[Pod] = []
        self.entrypoints = image_entrypoints()
        self.authority: Authority | None = None  # the CA behind the Issuer, where there is one

    def _workload(self, name: str) -> dict[str, Any]:
        return next(
            d
            for d in self.documents
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name
        )

    def _ray_pods(self, name: str) -> None:
        """The head and every worker group's replicas of RayCluster `name`, labelled as
        KubeRay labels them."""
        cluster = next(
            d for d in self.documents if d["kind"] == "RayCluster" and d["metadata"]["name"] == name
        )
        head = cluster["spec"]["headGroupSpec"]
        gcs = next(
            int(p["containerPort"])
            for p in head["template"]["spec"]["containers"][0]["ports"]
            if p["name"] == "gcs"
        )
        groups = [("head", head, 1, True)] + [
            (g["groupName"], g, int(g.get("replicas", 0)), False)
            for g in cluster["spec"].get("workerGroupSpecs", [])
        ]
        for group, spec, replicas, is_head in groups:
            template = spec["template"]
            for replica in range(replicas):
                labels = dict(template["metadata"].get("labels", {}))
                labels |= {"ray.io/cluster": name, "ray.io/group": group}
                labels["ray.io/node-type"] = "head" if is_head else "worker"
                node = RayNode(is_head, dict(spec.get("rayStartParams", {})), gcs)
                pod_name = f"{name}-head" if is_head else f"{name}-{group}-worker-{replica}"
                ip = f"{POD_NETWORK}{len(self.pods) + 1}"
                self.pods.append(Pod(pod_name, ip, labels, template["spec"], {}, ray=node))

    def plan(self, workloads: list[str]) -> None:
        """Every pod of those workloads gets its address before any starts, so that each
        one's environment names the others'. A workload named `RayCluster/NAME` is that
        cluster's pods."""
        for name in workloads:
            if name.startswith("RayCluster/"):
                self._ray_pods(name.partition("/")[2])
                continue
            workload = self._workload(name)
            template = workload["spec"]["template"]
            for replica in range(workload["spec"].get("replicas", 1)):
                claims = {
                    t["metadata"]["name"]: f"{t['metadata']['name']}-{name}-{replica}"
                    for t in workload["spec"].get("volumeClaimTemplates", [])
                }
                self.pods.append(
                    Pod(
                        f"{name}-{replica}",
                        f"{POD_NETWORK}{len(self.pods) + 1}",
                        dict(template["metadata"]["labels"]),
                        template["spec"],
                        claims,
                    )
                )

    # ---- what the cluster gives a pod -------------------------------------------------------

    def _selected(self, service: dict[str, Any]) -> list[Pod]:
        selector = service["spec"]["selector"]
        return [p for p in self.pods if all(p.labels.get(k) == v for k, v in selector.items())]

    def _target_port(self, service: dict[str, Any], port: int, pod: Pod) -> int:
        for entry in service["spec"]["ports"]:
            if entry["port"] == port:
                target = entry.get("targetPort", port)
                if isinstance(target, int):
                    return target
                for container in pod.spec["containers"]:
                    for declared in container.get("ports", []):
                        if declared.get("name") == target:
                            return int(declared["containerPort"])
        raise AssertionError(f"service {service['metadata']['name']} has no port {port}")

    def _address(self, name: str, port: int, dns: bool) -> str:
        service = self.services.get(name)
        if service is None:
            raise AssertionError(f"a value names {name}:{port}, which no Service is")
        pods = self._selected(service)
        if not pods:  # a Service whose pods are not run: an address where nothing listens
            return f"{POD_NETWORK}254:{port}"
        endpoints = [f"{p.ip}:{self._target_port(service, port, p)}" for p in pods]
        if len(endpoints) == 1 and not dns:
            return endpoints[0]
        return "ipv4:" + ",".join(endpoints)

    def _value(self, value: str, pod: Pod) -> str:
        if value == "0.0.0.0":
            return pod.ip
        if value.startswith("/"):
            return str(self._root(pod)) + value

        def service(match: re.Match[str]) -> str:
            return self._address(match["name"], int(match["port"]), bool(match["dns"]))

        return re.sub(r"^(?P<dns>dns:///)?(?P<name>[a-z][a-z0-9-]*):(?P<port>\d+)$", service, value)

    def _root(self, pod: Pod) -> Path:
        return self.root / "pods" / pod.name

    def _volume_folder(self, pod: Pod, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            return self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
        if name in pod.claims:
            return self.root / "claims" / pod.claims[name]
        if "secret" in volume:
            folder = self.root / "secrets" / pod.name / name
            folder.mkdir(parents=True, exist_ok=True)
            for key, text in self.secrets[volume["secret"]["secretName"]].items():
                (folder / key).write_text(text)
            return folder
        if "emptyDir" in volume:
            return self.root / "empty" / pod.name / name
        if volume.get("csi", {}).get("driver") == CERT_MANAGER_CSI:
            return self._pod_certificate(pod, volume)
        raise AssertionError(f"pod {pod.name}: volume {name} is of a kind not run here")

    def _pod_certificate(self, pod: Pod, volume: dict[str, Any]) -> Path:
        """What cert-manager's CSI driver mounts: a certificate of the pod's own, from the
        Issuer named, for the IPs and names the attributes give (${POD_IP}: the pod's)."""
        attributes = volume["csi"]["volumeAttributes"]
        assert self.authority is not None, "a certificate volume needs the test's CA"
        assert attributes["csi.cert-manager.io/issuer-name"] == ISSUER
        names = [
            n.strip().replace("${POD_IP}", pod.ip)
            for key in ("csi.cert-manager.io/ip-sans", "csi.cert-manager.io/dns-names")
            for n in attributes.get(key, "").split(",")
            if n.strip()
        ]
        folder = self.root / "csi" / pod.name / volume["name"]
        self.authority.issue(folder, attributes["csi.cert-manager.io/common-name"], tuple(names))
        return folder

    def _mount(self, pod: Pod, container: dict[str, Any]) -> None:
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for name in pod.claims:
            volumes.setdefault(name, {"name": name})
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == "/dev/shm":
                continue  # the machine's own shared memory, as a pod's emptyDir would be
            folder = self._volume_folder(pod, volumes[mount["name"]])
            folder.mkdir(parents=True, exist_ok=True)
            link = self._root(pod) / mount["mountPath"].lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(folder)

    def _environment(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(self.config_maps[source["configMapRef"]["name"]])
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                env[entry["name"]] = self.secrets[ref["name"]][ref["key"]]
        return {name: self._value(str(value), pod) for name, value in env.items()}

    # ---- running --------------------------------------------------------------------------

    def _ray_start(self, node: RayNode) -> list[str]:
        """The `ray start` KubeRay gives a Ray container, with this machine's mapping."""
        node.temp_dir = node.temp_dir or tempfile.mkdtemp(prefix="ray", dir="/tmp")
        node.readiness_port = node.gcs_port if node.head else free_port()
        flags = [f"--{key}={value}" for key, value in node.start_params.items()]
        flags += [
            "--block",
            f"--node-ip-address={RAY_NODE_IP}",
            f"--temp-dir={node.temp_dir}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--object-store-memory=100000000",
        ]
        if node.head:
            return [
                *RAY,
                "start",
                "--head",
                f"--port={node.gcs_port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                *flags,
            ]
        return [
            *RAY_JOINING,
            "start",
            f"--address={RAY_NODE_IP}:{node.gcs_port}",
            f"--node-manager-port={node.readiness_port}",
            *flags,
        ]

    def start(self, pod: Pod, log_dir: Path) -> None:
        self._root(pod).mkdir(parents=True, exist_ok=True)
        for index, container in enumerate(pod.spec["containers"]):
            self._mount(pod, container)
            if pod.ray is not None and index == 0:
                argv = self._ray_start(pod.ray)
            else:
                image = image_target(container["image"])
                argv = [*(container.get("command") or self.entrypoints[image])]
                argv += container.get("args", [])
            if argv[0] == "python":
                argv[0] = sys.executable  # the image's python is this project's here
            env = {
                # What an image has besides the manifest's environment: its PATH and the
                # installed project, here this interpreter's.
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                **self._environment(pod, container),
            }
            if pod.ray is not None:
                env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            log_dir.mkdir(parents=True, exist_ok=True)
            log = open(log_dir / f"{pod.name}-{container['name']}.log", "ab")  # noqa: SIM115
            pod.processes.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=self._root(pod),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()

    def wait_ready(self, pod: Pod, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        for index, (container, process) in enumerate(
            zip(pod.spec["containers"], pod.processes, strict=True)
        ):
            probe = container.get("readinessProbe")
            ip = pod.ip
            if pod.ray is not None and index == 0:
                probe, ip = {"tcpSocket": {"port": pod.ray.readiness_port}}, RAY_NODE_IP
            assert probe is not None, f"{pod.name}/{container['name']} has no readinessProbe"
            while not _probe(ip, probe):
                if process.poll() is not None:
                    raise AssertionError(
                        f"{pod.name}/{container['name']} exited: {process.returncode}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(f"{pod.name}/{container['name']} never became ready")
                time.sleep(0.3)

    def kill_and_recreate(self, name: str, log_dir: Path) -> None:
        """As when a node dies and the controller makes the pod anew: every container of pod
        `name` SIGKILLed, then started again with the same address and volumes."""
        pod = next(p for p in self.pods if p.name == name)
        for process in pod.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        pod.processes = []
        self.start(pod, log_dir)
        self.wait_ready(pod)

    def run(self, log_dir: Path) -> None:
        """Starts the pods in order, each once the one before is ready (as a StatefulSet's
        OrderedReady does; the suite's services wait for each other anyway), but a Ray
        cluster's pods all at once, as KubeRay creates them: the trainer beside the head is
        ready only once a worker has room for its learner."""
        for pod in self.pods:
            self.start(pod, log_dir)
            if pod.ray is None:
                self.wait_ready(pod)
        for pod in self.pods:
            if pod.ray is not None:
                self.wait_ready(pod)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM, as the kubelet sends, to every container, the gateways first; in a Ray
        pod, the containers after Ray's (the trainer) before Ray's. The exit code of each
        container, by pod/container."""
        codes: dict[str, int | None] = {}
        for pod in self._stop_order():
            named = list(zip(pod.spec["containers"], pod.processes, strict=False))
            for index, (container, process) in reversed(list(enumerate(named))):
                if pod.ray is not None and index == 0:
                    # Ray's node: its drain on SIGTERM (30 s) is Ray's own, not tested here.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    code = process.wait(90)
                except subprocess.TimeoutExpired:
                    code = None
                if code is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
                codes[f"{pod.name}/{container['name']}"] = code
            if pod.ray is not None and pod.ray.temp_dir:
                shutil.rmtree(pod.ray.temp_dir, ignore_errors=True)
        return codes

    def _stop_order(self) -> list[Pod]:
        """The start order reversed, but a Ray cluster's head (the trainer, which commits
        its learner's state on the way out) before the workers its learner runs on."""
        order = list(reversed(self.pods))
        ray = [i for i, p in enumerate(order) if p.ray is not None]
        if ray:
            group = sorted((order[i] for i in ray), key=lambda p: not (p.ray and p.ray.head))
            for i, pod in zip(ray, group, strict=True):
                order[i] = pod
        return order

    def address_of(self, service: str) -> str:
        port = self.services[service]["spec"]["ports"][0]["port"]
        return self._address(service, int(port), dns=False)


def _probe(ip: str, probe: Mapping[str, Any]) -> bool:
    if "grpc" in probe:
        return is_serving(f"{ip}:{probe['grpc']['port']}", timeout_s=0.5)
    if "httpGet" in probe:
        port = probe["httpGet"]["port"]
        if not isinstance(port, int):
            raise AssertionError("named HTTP probe ports are resolved by `run_pods`")
        try:
            with urllib.request.urlopen(
                f"http://{ip}:{port}{probe['httpGet']['path']}", timeout=0.5
            ) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False
    if "tcpSocket" in probe:
        with (
            contextlib.suppress(OSError),
            socket.create_connection((ip, int(probe["tcpSocket"]["port"])), timeout=0.5),
        ):
            return True
        return False
    raise AssertionError(f"a probe of a kind not run here: {probe}")


def resolve_named_ports(documents: tuple[dict[str, Any], ...]) -> None:
    """Probes that name a container port (`port: http`) get its number, as the kubelet
    resolves them."""
    for doc in documents:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            ports = {
                p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p
            }
            for key in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(key, {})
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    if kind in probe and isinstance(probe[kind].get("port"), str):
                        probe[kind]["port"] = ports[probe[kind]["port"]]


def issue_certificates(cluster: LocalCluster, authority: Authority) -> dict[str, dict[str, str]]:
    """What cert-manager makes of each Certificate: its Secret (tls.crt, tls.key, ca.crt)
    from `authority`, for the Certificate's names and, standing in for the DNS that maps
    them to pods, the addresses of the pods that mount the Secret."""
    made: dict[str, dict[str, str]] = {}
    for doc in cluster.documents:
        if doc["kind"] != "Certificate":
            continue
        spec = doc["spec"]
        mounting = [
            p.ip
            for p in cluster.pods
            if any(
                v.get("secret", {}).get("secretName") == spec["secretName"]
                for v in p.spec.get("volumes", [])
            )
        ]
        folder = cluster.root / "issued" / spec["secretName"]
        issued = authority.issue(folder, spec["commonName"], (*spec["dnsNames"], *mounting))
        made[spec["secretName"]] = {
            "tls.crt": issued.cert.read_text(),
            "tls.key": issued.key.read_text(),
            "ca.crt": issued.ca.read_text(),
        }
    return made


@contextlib.contextmanager
def running(
    documents: tuple[dict[str, Any], ...],
    workloads: list[str],
    root: Path,
    secrets: Mapping[str, Mapping[str, str]],
    authority: Authority | None = None,
) -> Iterator[LocalCluster]:
    """The workloads' pods running; with `authority`, the Certificates' Secrets are issued
    by it, as cert-manager with an Issuer of that CA would."""
    resolve_named_ports(documents)
    cluster = LocalCluster(documents, root, dict(secrets))
    cluster.plan(workloads)
    if authority is not None:
        cluster.authority = authority
        cluster.secrets = {**cluster.secrets, **issue_certificates(cluster, authority)}
    try:
        cluster.run(root / "logs")
        yield cluster
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), codes  # every graceful shutdown
