"""How a ``converge`` process ends (``provisioning.cli.main.leave``): with the command's exit
code, every byte of its output and its ``atexit`` handlers run, but without the interpreter's
teardown of every module; and normally when a non-daemon thread still runs."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.cli.helpers import CONVERGE, json_lines


def _python(code: str, tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``code`` with its stdout in a file (block-buffered, as when piped or redirected);
    (the process, what it wrote)."""
    out = tmp_path / "out.txt"
    with open(out, "w") as handle:
        proc = subprocess.run([sys.executable, "-c", code, *args], stdout=handle,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    return proc, out.read_text()


def test_leave_keeps_the_exit_code_the_buffered_output_and_the_atexit_handlers(tmp_path):
    marker = tmp_path / "atexit-ran"
    code = ("import atexit, sys\n"
            "from provisioning.cli.main import leave\n"
            "atexit.register(lambda: open(sys.argv[1], 'w').write('ran'))\n"
            "sys.stdout.write('x' * 200000)\n"
            "leave(3)\n"
            "print('not reached')\n")
    proc, out = _python(code, tmp_path, str(marker))
    assert proc.returncode == 3, proc.stderr
    assert out == "x" * 200000
    assert marker.read_text() == "ran"


def test_leave_returns_while_a_non_daemon_thread_runs(tmp_path):
    """The interpreter would wait for that thread: so does the process (a normal exit)."""
    code = ("import sys, threading\n"
            "from provisioning.cli.main import leave\n"
            "release = threading.Event()\n"
            "worker = threading.Thread(target=release.wait)\n"
            "worker.start()\n"
            "code = leave(4)\n"
            "print('returned', code)\n"
            "release.set()\n"
            "worker.join()\n"
            "sys.exit(code)\n")
    proc, out = _python(code, tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert out == "returned 4\n"


def test_converge_ends_with_its_whole_summary_and_exit_code(tmp_path):
    """The console script leaves through ``leave``: a 300-machine JSON status arrives whole,
    and a failing command keeps its exit code."""
    (tmp_path / "cluster.yml").write_text("driver: fake:./cloud\nmachines:\n  node:\n"
                                          "    count: 300\n")
    proc = subprocess.run([CONVERGE, "--output", "json", "status"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status = json_lines(proc.stdout)[-1]
    assert status["event"] == "status" and len(status["machines"]) == 300
    bad = subprocess.run([CONVERGE, "-f", "missing.yml", "status"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "missing.yml" in bad.stderr
