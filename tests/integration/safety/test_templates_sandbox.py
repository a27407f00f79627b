"""Templates run in a bounded sandbox: no Python reachable, no unbounded loop or output; a
violation is a ConfigError naming the file and template line, exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.safety.helpers import converge_here

CLUSTER = ('driver: "fake:"\nmachines:\n  web:\n    converge:\n'
           '      - file: {path: out.txt, template: t.j2}\n')


def _cluster(tmp_path: Path, template: str) -> Path:
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    (tmp_path / "t.j2").write_text(template)
    return tmp_path


@pytest.mark.parametrize("template, words", [
    ("ok\n{{ cycler.__init__.__globals__.os.system('touch PWNED') }}\n", "line 2"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{% for i in range(10**9) %}x{% endfor %}", "larger than the template limit"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
     "loop iterations"),
    ("{{ 'x' * 10**9 }}", "repetition"),
    ("{{ 'x'|center(1000000000) }}", "larger than the template limit"),
    ("{{ '{:>999999999}'.format(1) }}", "format width"),
    ("{% set x = 'ab' %}" + "{% set x = x ~ x %}" * 40 + "{{ x }}", "longer than"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "template t.j2"),
    ("{{ 10**10**10 }}", "bits"),
])
def test_hostile_template_is_refused_without_running_anything(tmp_path, template, words):
    cwd = _cluster(tmp_path, template)
    run = converge_here("up", cwd=cwd)
    assert run.code == 2, run.text
    assert "Traceback" not in run.text
    assert "t.j2" in run.err and words in run.err, run.err
    assert "cluster.yml" in run.err
    assert not (cwd / "PWNED").exists()
    assert len(run.err.splitlines()) <= 24


def test_template_still_renders_ordinary_jinja(tmp_path):
    cwd = _cluster(tmp_path, "{% for i in range(3) %}{{ loop.index }}{% endfor %} "
                             "{{ machine.name|upper }} {{ cluster.machines|join(',') }}\n")
    run = converge_here("up", cwd=cwd)
    assert run.code == 0, run.text
    servers = list((cwd / ".provisioning" / "fake" / "machines").iterdir())
    assert len(servers) == 1
    assert any(p.read_text() == "123 WEB web\n" for p in servers[0].rglob("out.txt"))


def test_healthcheck_command_is_sandboxed_too(tmp_path):
    (tmp_path / "cluster.yml").write_text(
        'driver: "fake:"\nmachines:\n  web:\n    healthcheck:\n      tcp: "{{ cycler.__init__.'
        '__globals__.os.system(\'touch PWNED\') }}:22"\n')
    run = converge_here("up", cwd=tmp_path)
    assert run.code == 2, run.text
    assert "not allowed in a template" in run.err
    assert not (tmp_path / "PWNED").exists()
