"""A single-node Kafka broker (KRaft, broker+controller) on loopback for tests, benchmarks and dev.

Kafka's jars come from Maven Central through the system `mvn` (the pom ships as
package data), so a JDK and Maven are all a machine needs; they are fetched once
into a per-user cache and reused by every broker started afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import importlib.resources
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from types import TracebackType
from typing import Self

from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.localdev._child_process import (
    free_ports,
    log_tail,
    pause_process,
    resume_process,
    spawn_leashed,
    stop_process,
)

_POM_RESOURCE = "kafka-broker-pom.xml"
_MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_COMPLETE_MARKER = ".complete"

_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _max_message_bytes() -> int:
    """The broker accepts what KafkaBus publishes and sets on the topics it creates."""
    from vcf_agent.bus._kafka import MAX_MESSAGE_BYTES

    return MAX_MESSAGE_BYTES


class KafkaInstallError(RuntimeError):
    """Kafka's jars could not be installed or the broker could not be started."""


class KafkaToolMissingError(KafkaInstallError):
    """A required binary (java or mvn) is not on this machine; tests skip on this."""


def _pom_text() -> str:
    return (importlib.resources.files("vcf_agent.localdev") / _POM_RESOURCE).read_text(encoding="utf-8")


def kafka_version() -> str:
    """The Kafka version pinned in the shipped pom (the single place it is written)."""
    root = ET.fromstring(_pom_text())
    version = root.findtext("m:properties/m:kafka.version", namespaces=_MAVEN_NS)
    if not version:
        raise KafkaInstallError(f"{_POM_RESOURCE} does not pin kafka.version")
    return version.strip()


def default_install_dir() -> Path:
    """~/.cache/vcf-agent/kafka-<version> (or under $XDG_CACHE_HOME), shared by all checkouts."""
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "vcf-agent" / f"kafka-{kafka_version()}"


def find_java() -> str:
    """$JAVA_HOME/bin/java if set, else java on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaToolMissingError("java (JDK 17+) is not on PATH and JAVA_HOME is not set")
    return java


def install_kafka(install_dir: Path | None = None) -> Path:
    """Install Kafka's jars once; returns the libs directory for `java -cp 'libs/*'`.

    Idempotent and safe across processes: an exclusive file lock serialises
    installers, and the libs directory only appears (by rename) once complete.
    """
    target = install_dir or default_install_dir()
    libs = target / "libs"
    if (target / _COMPLETE_MARKER).is_file():
        return libs
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if (target / _COMPLETE_MARKER).is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaToolMissingError("mvn (Apache Maven) is not on PATH; it installs Kafka's jars")
        pom = target / "pom.xml"
        pom.write_text(_pom_text(), encoding="utf-8")
        staging = target / f"libs.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            output = (result.stdout + result.stderr)[-4000:]
            raise KafkaInstallError(f"mvn could not resolve Kafka {kafka_version()}:\n{output}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (target / _COMPLETE_MARKER).write_text(kafka_version(), encoding="utf-8")
    return libs


class LocalKafkaBroker(AsyncComponent):
    """One KRaft node on loopback with a fresh log dir; `bootstrap_servers` once started.

    Async start()/stop() for services and benchmarks; start_sync()/stop_sync() (and
    `with`) for callers without a free event loop, such as a lazily requested pytest
    fixture. Either way the JVM is spawned from the calling thread and dies with it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        heap: str = "512m",
        install_dir: Path | None = None,
        data_dir: Path | None = None,
        startup_timeout_s: float = 90.0,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._heap = heap
        self._install_dir = install_dir
        self._data_dir = data_dir
        self._startup_timeout_s = startup_timeout_s
        self._extra_properties = dict(extra_properties or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._work_dir: Path | None = None
        self._owns_work_dir = False
        self._ready_by = 0.0
        self.port = 0
        self.controller_port = 0
        self.install_seconds = 0.0
        self.start_seconds = 0.0

    @property
    def bootstrap_servers(self) -> str:
        if self._process is None:
            raise KafkaInstallError("the broker is not running; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path | None:
        return self._work_dir / "server.log" if self._work_dir else None

    async def start(self) -> None:
        """start_sync() on a worker thread: installing and booting take seconds."""
        await asyncio.to_thread(self.start_sync)

    def start_sync(self) -> None:
        """Install if needed, format a fresh log dir, launch, and block until metadata is served."""
        if self._process is not None:
            return
        java = find_java()
        began = time.monotonic()
        libs = install_kafka(self._install_dir)
        self.install_seconds = time.monotonic() - began
        try:
            jvm, config = self._prepare(java, libs)
            # A restart keeps its formatted log (formatting again would give it a new cluster id).
            if not (config.parent / "data" / "meta.properties").exists():
                self._format_storage(jvm, config)
            self._spawn(jvm, config)
            # The probe is async; a private loop in a worker thread works even inside a running loop.
            with concurrent.futures.ThreadPoolExecutor(1) as probe:
                while not probe.submit(asyncio.run, self._serves_metadata()).result():
                    self._check_still_starting()
                    time.sleep(0.2)
        except BaseException:
            self.stop_sync()
            raise
        self.start_seconds = time.monotonic() - began - self.install_seconds

    def _prepare(self, java: str, libs: Path) -> tuple[list[str], Path]:
        """Pick ports, write server and logging config; returns the JVM command prefix and config path."""
        if self._work_dir is not None:
            pass  # a restart after kill_sync(): same log, same ports
        elif self._data_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="vcf-agent-kafka-"))
            self._owns_work_dir = True
        else:
            self._work_dir = self._data_dir
            self._work_dir.mkdir(parents=True, exist_ok=True)
        work = self._work_dir
        # The client and controller listeners need two different ports.
        if not self.port or not self.controller_port:
            taken = {self.port, self.controller_port, self._requested_port or 0}
            picked = iter(free_ports(2, self.host, besides=taken))
            self.port = self.port or self._requested_port or next(picked)
            self.controller_port = self.controller_port or next(picked)
        config = work / "server.properties"
        config.write_text(self._properties(work / "data"), encoding="utf-8")
        log4j = work / "log4j.properties"
        log4j.write_text(_LOG4J_PROPERTIES.format(log_file=work / "server.log"), encoding="utf-8")
        jvm = [
            java,
            f"-Xmx{self._heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            f"-Dkafka.logs.dir={work}",
            "-cp",
            f"{libs}/*",
        ]
        return jvm, config

    def _properties(self, log_dir: Path) -> str:
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            # Fewer offsets partitions: the group coordinator loads faster on a fresh node.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(_max_message_bytes()),
            "replica.fetch.max.bytes": str(_max_message_bytes()),
            "num.network.threads": "2",
            "num.io.threads": "4",
            # Small segments and indexes keep per-topic disk use low when tests create many topics.
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.index.size.max.bytes": str(1024 * 1024),
            # The log cleaner allocates its dedupe buffer as one array when it starts (128 MiB by
            # default): a broker restarted with a 256 MiB heap after SIGKILL died at that step with
            # OutOfMemoryError (CI, 2026-12-04). 16 MiB still holds ~700,000 keys per cleaning pass.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            **self._extra_properties,
        }
        return "".join(f"{key}={value}\n" for key, value in properties.items())

    def _format_storage(self, jvm: list[str], config: Path) -> None:
        cluster_id = _cluster_id()
        result = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaInstallError(f"kafka-storage format failed: {result.stdout}{result.stderr}")

    def _spawn(self, jvm: list[str], config: Path) -> None:
        assert self._work_dir is not None
        # Spawned from the caller's thread (not a worker): PDEATHSIG fires when the forking thread exits.
        with (self._work_dir / "stdout.log").open("wb") as stdout:
            self._process = spawn_leashed(
                [*jvm, "kafka.Kafka", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=self._work_dir,
            )
        self._ready_by = time.monotonic() + self._startup_timeout_s

    def _check_still_starting(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise KafkaInstallError(
                f"Kafka exited with code {self._process.returncode} during startup:\n{self._logs()}"
            )
        if time.monotonic() > self._ready_by:
            raise KafkaInstallError(
                f"Kafka did not serve metadata within {self._startup_timeout_s:.0f}s:\n{self._logs()}"
            )

    async def _serves_metadata(self) -> bool:
        # Imported here: aiokafka is the `kafka` extra, and this package serves the default install too.
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        # A bare TCP probe first: aiokafka logs every refused connection as an error.
        try:
            async with asyncio.timeout(2):
                _, writer = await asyncio.open_connection(self.host, self.port)
            writer.close()
            await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        admin = AIOKafkaAdminClient(
            bootstrap_servers=f"{self.host}:{self.port}", request_timeout_ms=2000, client_id="localdev-probe"
        )
        try:
            async with asyncio.timeout(3):
                await admin.start()
                cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()

    def _logs(self) -> str:
        assert self._work_dir is not None
        return log_tail(self._work_dir / "stdout.log") + "\n" + log_tail(self._work_dir / "server.log")

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM for a controlled shutdown, SIGKILL after timeout_s; removes our temp dir."""
        await asyncio.to_thread(self.stop_sync, timeout_s)

    def stop_sync(self, timeout_s: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout_s)
        if self._work_dir is not None and self._owns_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def pause(self) -> None:
        """SIGSTOP: a stalled broker host (see pause_process)."""
        if not pause_process(self._process):
            raise KafkaInstallError("the broker is not running; call start() first")

    def resume(self) -> None:
        """SIGCONT after pause()."""
        resume_process(self._process)

    def kill_sync(self) -> None:
        """SIGKILL, as a crash would; the log and ports are kept, so start_sync() again is a restart."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, 10, signal.SIGKILL)

    def __enter__(self) -> Self:
        self.start_sync()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_sync()


def _cluster_id() -> str:
    """A random id as Kafka's Uuid.randomUuid() makes them: URL-safe base64, never starting with '-'.

    One in 64 random ids starts with '-', which the storage tool's argument parser reads as an
    option (it failed a CI run that way), so Kafka itself draws again; so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
