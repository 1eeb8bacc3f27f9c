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
  files).
Readiness is each container's own readinessProbe (gRPC health, HTTP GET or TCP)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile

from services.launcher import is_serving

ROOT = Path(__file__).resolve().parents[2]
POD_NETWORK = "127.0.10."


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

    def _workload(self, name: str) -> dict[str, Any]:
        return next(
            d
            for d in self.documents
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name
        )

    def plan(self, workloads: list[str]) -> None:
        """Every pod of those workloads gets its address before any starts, so that each
        one's environment names the others'."""
        for name in workloads:
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
        if not pods:  # not run here (the trainer): an address where nothing listens
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
        raise AssertionError(f"pod {pod.name}: volume {name} is of a kind not run here")

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

    def start(self, pod: Pod, log_dir: Path) -> None:
        self._root(pod).mkdir(parents=True, exist_ok=True)
        for container in pod.spec["containers"]:
            self._mount(pod, container)
            command = container.get("command") or self.entrypoints[image_target(container["image"])]
            argv = [*command, *container.get("args", [])]
            if argv[0] == "python":
                argv[0] = sys.executable  # the image's python is this project's here
            env = {
                # What an image has besides the manifest's environment: its PATH and the
                # installed project, here this interpreter's.
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                **self._environment(pod, container),
            }
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

    def wait_ready(self, pod: Pod, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        for container, process in zip(pod.spec["containers"], pod.processes, strict=True):
            probe = container["readinessProbe"]
            while not _probe(pod.ip, probe):
                if process.poll() is not None:
                    raise AssertionError(
                        f"{pod.name}/{container['name']} exited: {process.returncode}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(f"{pod.name}/{container['name']} never became ready")
                time.sleep(0.3)

    def run(self, log_dir: Path) -> None:
        """Starts the pods in order, each once the one before is ready (as a StatefulSet's
        OrderedReady does; the suite's services wait for each other anyway)."""
        for pod in self.pods:
            self.start(pod, log_dir)
            self.wait_ready(pod)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM, as the kubelet sends, to every container, the gateways first."""
        codes: dict[str, int | None] = {}
        for pod in reversed(self.pods):
            for process in pod.processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in pod.processes:
                try:
                    codes[pod.name] = process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    codes[pod.name] = process.wait(10)
        return codes

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


@contextlib.contextmanager
def running(
    documents: tuple[dict[str, Any], ...],
    workloads: list[str],
    root: Path,
    secrets: Mapping[str, Mapping[str, str]],
) -> Iterator[LocalCluster]:
    resolve_named_ports(documents)
    cluster = LocalCluster(documents, root, secrets)
    cluster.plan(workloads)
    try:
        cluster.run(root / "logs")
        yield cluster
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), codes
