"""Socket hijack and planted links (issue 13 items 2 and 3).

The server listens only in a folder no other local user can change and never follows a link at
`<socket>.lock`; the client refuses a socket, or a server process, that belongs to another user.
Where the suite runs as root, the attacks are made by a real second user (`nobody`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.conftest import until
from tests.second_user import (
    SYSTEM_PYTHON,
    as_nobody,
    as_nobody_popen,
    nobody_ids,
    requires_second_user,
)
from voltui.engine.errors import UserError
from voltui.engine.orchestrator import Orchestrator
from voltui.remote.client import RemoteEngine
from voltui.remote.paths import UntrustedSocketError
from voltui.remote.protocol import PROTOCOL_VERSION
from voltui.remote.server import EngineServer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------------- the lock file


async def test_planted_symlink_at_the_lock_is_refused(
    engine: Orchestrator, short_dir: Path
) -> None:
    victim = short_dir / "precious.txt"
    victim.write_text("precious data\n")
    sock = short_dir / "s.sock"
    os.symlink(victim, f"{sock}.lock")
    server = EngineServer(engine, socket_path=sock)
    with pytest.raises(UserError, match="symbolic link"):
        await server.start()
    assert victim.read_text() == "precious data\n"  # not truncated, no pid written
    assert not sock.exists()


async def test_hard_link_at_the_lock_is_refused(engine: Orchestrator, short_dir: Path) -> None:
    victim = short_dir / "precious.txt"
    victim.write_text("precious data\n")
    sock = short_dir / "s.sock"
    os.link(victim, f"{sock}.lock")
    with pytest.raises(UserError, match="hard link"):
        await EngineServer(engine, socket_path=sock).start()
    assert victim.read_text() == "precious data\n"


async def test_lock_and_socket_are_private(engine: Orchestrator, short_dir: Path) -> None:
    sock = short_dir / "new" / "deeper" / "s.sock"
    server = EngineServer(engine, socket_path=sock)
    await server.start()
    try:
        assert mode(short_dir / "new") == 0o700 and mode(sock.parent) == 0o700
        assert mode(sock) == 0o600 and mode(Path(f"{sock}.lock")) == 0o600
        async with RemoteEngine(socket_path=sock, reconnect=False, heartbeat=0) as client:
            assert await client.ping() > 0
    finally:
        await server.stop()


# ------------------------------------------------------------------------- the server's folder


async def test_a_shared_sticky_folder_gets_a_private_subfolder(
    engine: Orchestrator, short_dir: Path
) -> None:
    """`--socket /tmp/voltui.sock`: the socket goes into `/tmp/voltui-<uid>/` (0700, ours),
    and a client given the same name finds it there."""
    shared = short_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    server = EngineServer(engine, socket_path=shared / "voltui.sock")
    await server.start()
    try:
        private = shared / f"voltui-{os.geteuid()}"
        assert server.socket_path == private / "voltui.sock"
        assert mode(private) == 0o700 and private.stat().st_uid == os.geteuid()
        assert (private / "voltui.sock").is_socket()
        assert not (shared / "voltui.sock").exists()
        async with RemoteEngine(socket_path=shared / "voltui.sock") as client:
            assert (await client.snapshot()).agents  # a real answer through the mapped path
    finally:
        await server.stop()


@needs_root
async def test_a_squatted_private_subfolder_is_refused(
    engine: Orchestrator, short_dir: Path
) -> None:
    shared = short_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    squat = shared / f"voltui-{os.geteuid()}"
    squat.mkdir(mode=0o700)
    os.chown(squat, *nobody_ids())  # another user made it first
    with pytest.raises(UntrustedSocketError, match=r"belongs to nobody"):
        await EngineServer(engine, socket_path=shared / "voltui.sock").start()


async def test_group_writable_folder_is_refused(engine: Orchestrator, short_dir: Path) -> None:
    shared = short_dir / "team"
    shared.mkdir()
    shared.chmod(0o770)
    with pytest.raises(UntrustedSocketError, match="writable by other users"):
        await EngineServer(engine, socket_path=shared / "voltui.sock").start()


async def test_folder_under_a_swappable_parent_is_refused(
    engine: Orchestrator, short_dir: Path
) -> None:
    """Our 0700 folder inside a world-writable, non-sticky one: anyone can rename it away."""
    open_parent = short_dir / "open"
    mine = open_parent / "mine"
    mine.mkdir(parents=True)
    mine.chmod(0o700)
    open_parent.chmod(0o777)
    with pytest.raises(UntrustedSocketError, match="folder above it"):
        await EngineServer(engine, socket_path=mine / "voltui.sock").start()


@needs_root
async def test_another_users_folder_is_refused(engine: Orchestrator, short_dir: Path) -> None:
    theirs = short_dir / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, *nobody_ids())
    with pytest.raises(UntrustedSocketError, match=r"belongs to nobody"):
        await EngineServer(engine, socket_path=theirs / "voltui.sock").start()


def test_the_message_says_what_to_do(short_dir: Path) -> None:
    from voltui.remote.paths import prepare_socket_dir

    shared = short_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(UntrustedSocketError) as info:
        prepare_socket_dir(shared / "voltui.sock")
    text = str(info.value)
    assert "another local user could replace the socket" in text
    assert "$XDG_RUNTIME_DIR/voltui/voltui.sock" in text and "--socket" in text


# ------------------------------------------------------------------------- the client


@needs_root
async def test_client_refuses_a_socket_owned_by_another_user(
    engine: Orchestrator, short_dir: Path
) -> None:
    sock = short_dir / "s.sock"
    server = EngineServer(engine, socket_path=sock)
    await server.start()
    try:
        os.chown(sock, *nobody_ids())
        client = RemoteEngine(socket_path=sock, reconnect=False, heartbeat=0)
        with pytest.raises(UntrustedSocketError, match="belongs to nobody"):
            await client.connect()
        assert server.clients == 0
    finally:
        await server.stop()


SQUATTER = textwrap.dedent(
    """
    import json, os, socket, sys
    path, log = sys.argv[1], sys.argv[2]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen()
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        hello = {{"type": "hello", "protocol": {protocol}, "server": "voltui", "version": "0.1.0",
                 "pid": os.getpid(), "auth": "none"}}
        conn.settimeout(3)
        data = b""
        try:
            conn.sendall(json.dumps(hello).encode() + b"\\n")
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, OSError):
            pass
        with open(log, "ab") as fh:
            fh.write(b"connection:" + data + b"\\n")
        conn.close()
    """
)


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A folder that belongs to `nobody`, where a squatter can bind a socket."""
    path = Path(tempfile.mkdtemp(prefix="vq-", dir="/tmp"))
    try:
        if os.geteuid() == 0:
            os.chown(path, *nobody_ids())
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@requires_second_user
async def test_client_refuses_a_squatter_run_by_another_user(nobodys_dir: Path) -> None:
    """`nobody` binds the path first and waits for the victim's requests: the client refuses,
    by the socket's owner and, when the file itself looks right, by the peer's uid."""
    assert SYSTEM_PYTHON is not None
    sock = nobodys_dir / "voltui.sock"
    log = nobodys_dir / "received.log"
    script = SQUATTER.format(protocol=PROTOCOL_VERSION)
    squatter = as_nobody_popen(
        [SYSTEM_PYTHON, "-c", script, str(sock), str(log)], stdout=-1, stderr=-1
    )
    try:
        assert squatter.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(squatter.stdout.readline), 20)
        assert line.strip() == "ready", squatter.stderr.read() if squatter.stderr else ""
        assert os.stat(sock).st_uid == nobody_ids()[0]

        # 1. The socket file belongs to nobody: refused before connecting.
        client = RemoteEngine(socket_path=sock, reconnect=False, heartbeat=0)
        with pytest.raises(UntrustedSocketError, match="belongs to nobody"):
            await client.connect()
        assert not log.exists()  # not even a connection

        # 2. The file is made to look like ours; the process behind it is still nobody's.
        os.chown(sock, 0, 0)
        client = RemoteEngine(socket_path=sock, reconnect=False, heartbeat=0)
        with pytest.raises(UntrustedSocketError, match=r"runs as nobody .*Nothing was sent"):
            await client.connect()
        try:
            await until(lambda: log.exists(), what="the squatter logged the connection")
        except AssertionError:
            squatter.kill()
            out, err = squatter.communicate()
            raise AssertionError(f"squatter: {out!r} {err!r}") from None
        assert log.read_bytes() == b"connection:\n"  # it received nothing at all
    finally:
        squatter.kill()
        squatter.wait()


@requires_second_user
async def test_second_user_cannot_reach_or_swap_the_socket(
    server: EngineServer, sock: Path
) -> None:
    assert SYSTEM_PYTHON is not None
    probe = textwrap.dedent(
        """
        import os, socket, sys
        path = sys.argv[1]
        for what, act in [
            ("connect", lambda: socket.socket(socket.AF_UNIX).connect(path)),
            ("unlink", lambda: os.unlink(path)),
            ("bind", lambda: socket.socket(socket.AF_UNIX).bind(path + ".evil")),
        ]:
            try:
                act()
                print(what, "ALLOWED")
            except OSError as exc:
                print(what, "refused", exc.errno)
        """
    )
    result = as_nobody([SYSTEM_PYTHON, "-c", probe, str(sock)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert all("refused" in line for line in lines if line), result.stdout
    assert len([line for line in lines if line]) == 3
    async with RemoteEngine(socket_path=sock, reconnect=False, heartbeat=0) as client:
        assert await client.ping() > 0  # still ours, still answering
