"""Hostile and careless inputs: each ends with exit 2, a typed message naming what was wrong,
no traceback, and nothing written (no state file, no machine in the fake cloud)."""

from __future__ import annotations

import os

import pytest

from tests.cli_runner import converge


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(tmp_path, cluster_text, *args, expect):
    """Run ``converge ARGS`` on a cluster file holding ``cluster_text``; it must be refused as
    bad input, naming ``expect``, and leave the directory as it was."""
    (tmp_path / "cluster.yml").write_text(cluster_text)
    before = _files(tmp_path)
    result = converge(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert expect in result.stderr, result.stderr
    assert _files(tmp_path) == before, "bad input wrote something"
    return result


@pytest.mark.parametrize("template", ["../outside.j2", "{tmp}/inside.j2"],
                         ids=["dotdot", "absolute"])
def test_a_template_outside_the_cluster_directory_is_refused_before_any_machine(tmp_path,
                                                                               template):
    (tmp_path / "inside.j2").write_text("hello\n")
    (tmp_path.parent / "outside.j2").write_text("hello\n")
    template = template.format(tmp=tmp_path)
    refused(tmp_path, f"""driver: "fake:./cloud"
machines:
  web:
    converge:
      - file: {{path: /etc/motd, template: "{template}"}}
""", "up", expect="is outside the cluster file's directory")


TWO_WEB = 'driver: "fake:./cloud"\nmachines:\n  web: {count: 2}\n'


@pytest.mark.parametrize("args", [
    ("up", "nosuch"), ("up", "--replace", "nosuch"), ("stop", "nosuch"), ("destroy", "nosuch"),
    ("sync", "nosuch"), ("converge", "nosuch"), ("verify", "nosuch"), ("test", "nosuch"),
    ("import", "nosuch", "srv-1"), ("snapshot", "save", "nosuch")],
    ids=lambda args: "-".join(args))
def test_an_unknown_machine_on_the_command_line_creates_no_state_file(tmp_path, args):
    refused(tmp_path, TWO_WEB, *args, expect="no machine or group 'nosuch'")


def test_replace_of_a_group_names_its_machines(tmp_path):
    result = refused(tmp_path, TWO_WEB, "up", "--replace", "web",
                     expect="'web' is a group, not a machine")
    assert "web-1, web-2" in result.stderr and "internal error" not in result.stderr


@pytest.mark.parametrize("args,expect", [
    (("plan", "--out", "/proc/nowhere/plan.json"), "/proc/nowhere"),
    # checked before any machine is read (with none created, inventory writes nothing)
    (("inventory", "--dir", "cluster.yml/access"), "cluster.yml is not a directory")],
    ids=["plan-out", "inventory-dir"])
def test_an_output_path_that_cannot_be_written_is_the_users_error(tmp_path, args, expect):
    result = refused(tmp_path, TWO_WEB, *args, expect=expect)
    assert "internal error" not in result.stderr


def test_a_plan_made_before_the_state_existed_applies(tmp_path):
    """`plan --out` on a new project (no state file yet), then `apply`: not refused as stale
    because the state file apply creates is "another state"."""
    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge("plan", "--out", "plan.json", cwd=tmp_path, check=True)
    assert not (tmp_path / ".provisioning").exists()
    applied = converge("apply", "plan.json", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "2 ok" in applied.stdout


def _made_with_schema_version(tmp_path, version: str):
    """A project after one ``up``, its state file's schema version then set to ``version``."""
    import sqlite3

    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge("up", cwd=tmp_path, check=True)
    state = tmp_path / ".provisioning" / "state.db"
    with sqlite3.connect(state) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    db.close()
    return state


@pytest.mark.parametrize("command", ["up", "status"])
def test_a_state_file_of_a_newer_schema_is_refused_unchanged(tmp_path, command):
    state = _made_with_schema_version(tmp_path, "99")
    before = (state.read_bytes(), sorted(p.name for p in state.parent.iterdir()))
    result = converge(command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "newer provisioning (schema 99" in result.stderr and "Traceback" not in result.stderr
    assert (state.read_bytes(), sorted(p.name for p in state.parent.iterdir())) == before


@pytest.mark.parametrize("edit,expect", [
    (lambda plan: plan["machines"][0].update(action="destroy"),
     "machine 'web-1' is planned 'destroy', but the cluster file has it"),
    (lambda plan: plan["machines"][0].update(name="web-9"),
     "machine 'web-9' is planned 'nothing', but the cluster file has no such machine"),
    (lambda plan: plan["machines"][0].update(action="rm -rf /"), "is not one of create"),
    (lambda plan: plan["machines"][0].update(state_version="2"), "is not a number"),
    (lambda plan: plan.update(machines="web-1"), "the plan is damaged")],
    ids=["destroy-a-kept-machine", "unknown-machine", "unknown-action", "version-text",
         "machines-text"])
def test_a_plan_edited_by_hand_is_refused_and_touches_nothing(tmp_path, edit, expect):
    import json

    from provisioning.drivers.fake import FakeWarehouse

    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge("up", cwd=tmp_path, check=True)
    converge("plan", "--out", "plan.json", cwd=tmp_path, check=True)
    plan = json.loads((tmp_path / "plan.json").read_text())
    edit(plan)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    servers = FakeWarehouse(str(tmp_path / "cloud")).servers()
    result = converge("apply", "plan.json", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expect in result.stderr and "internal error" not in result.stderr, result.stderr
    assert FakeWarehouse(str(tmp_path / "cloud")).servers() == servers


@pytest.mark.parametrize("step,expect", [
    ('command: {run: "true", timeout: .nan}', "expected a positive number of seconds (finite)"),
    ('command: {run: "true", timeout: .inf}', "expected a positive number of seconds (finite)"),
    ('command: {run: "true", env: {"A=B": x}}', "is not an environment variable name"),
    ('command: {run: "echo \\0"}', "command.run: contains a NUL byte"),
    ('command: {run: "true", cwd: "/a\\0b"}', "command.cwd: contains a NUL byte"),
    ('file: {path: "/etc/\\0x", content: x}', "file.path: contains a NUL byte")],
    ids=["nan-timeout", "inf-timeout", "env-name", "nul-run", "nul-cwd", "nul-path"])
def test_a_step_value_no_machine_can_take_is_refused_before_any_machine(tmp_path, step, expect):
    refused(tmp_path, f'driver: "fake:./cloud"\nmachines:\n  web:\n    converge:\n      - {step}\n',
            "up", expect=expect)


@pytest.mark.parametrize("args", [("state", "export", "-o", "/proc/nowhere/export.json"),
                                  ("state", "export"), ("state", "show")],
                         ids=["export-unwritable", "export", "show"])
def test_reading_commands_of_the_state_create_no_state_file(tmp_path, args):
    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge(*args, cwd=tmp_path)
    assert not (tmp_path / ".provisioning").exists()


@pytest.mark.parametrize("cluster,key", [
    ("machines:\n  web: {machine_options: {image: nope}}\n", "machines.web.machine_options.image"),
    ("machine_options: {image: nope}\nmachines:\n  web: {}\n", "machine_options.image"),
    ("images:\n  x: {from: nope}\n  y: {from: x}\nmachines:\n  web: {machine_options: {image: y}}\n",
     "images.x.from")], ids=["machine", "top-level", "file-image-layers"])
@pytest.mark.parametrize("command", [("up",), ("up", "--why-run"), ("plan",)],
                         ids=lambda c: "-".join(c))
def test_an_image_the_driver_does_not_have_is_refused_before_the_state_file(tmp_path, cluster,
                                                                           key, command):
    refused(tmp_path, 'driver: "fake:./cloud"\n' + cluster, *command,
            expect=f"{key}: fake image 'nope' does not exist")


def test_a_saved_machine_is_not_refused_for_an_image_deleted_since(tmp_path):
    """Only machines that will boot are asked about: one already made keeps working."""
    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge("up", cwd=tmp_path, check=True)
    deleted = "machine_options: {image: img-deleted}"
    (tmp_path / "cluster.yml").write_text(TWO_WEB.replace("count: 2", f"count: 2, {deleted}"))
    assert "0 changes" in converge("up", cwd=tmp_path, check=True).stdout
    (tmp_path / "cluster.yml").write_text(TWO_WEB.replace("count: 2", f"count: 3, {deleted}"))
    grown = converge("up", cwd=tmp_path)
    assert grown.returncode == 2 and "fake image 'img-deleted' does not exist" in grown.stderr


def test_importing_a_resource_that_does_not_exist_creates_no_state_file(tmp_path):
    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    result = converge("import", "web-1", "srv-missing", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fake server 'srv-missing' does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]


@pytest.mark.parametrize("command", ["destroy", "stop"])
def test_a_missing_image_does_not_block_destroying_or_stopping_the_others(tmp_path, command):
    """The image of a machine never made is asked about by commands that make machines."""
    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge("up", cwd=tmp_path, check=True)
    (tmp_path / "cluster.yml").write_text(
        TWO_WEB + "  db: {machine_options: {image: img-deleted}}\n")
    done = converge(command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 changes" in done.stdout


@pytest.mark.parametrize("body,expect", [
    ('converge:\n      - command: {run: "echo {{ cycler.__init__.__globals__ }}"}',
     "command.run: [web] template"),
    ('converge:\n      - command: {run: "echo {{ \\"a\\" * 10**10 }}"}', "a repetition longer"),
    ('converge:\n      - command: {run: "echo {{ machine.name"}', "unexpected end of template"),
    ('healthcheck:\n      - command: "echo {{ range(10**9)|list|length }}"',
     "healthcheck[0].command: [web] template")],
    ids=["command-unsafe", "command-huge", "command-syntax", "healthcheck-huge"])
def test_a_hostile_command_or_healthcheck_template_is_refused_before_any_machine(tmp_path, body,
                                                                                 expect):
    refused(tmp_path, f'driver: "fake:./cloud"\nmachines:\n  web:\n    {body}\n', "up",
            expect=expect)


@pytest.mark.parametrize("damage,why", [
    ("data = json_set(data, '$.reference', 'x')", "reference is str"),
    ("data = '[]'", "expected a JSON object, got list"),
    ("data = json_set(data, '$.generation', 'two')", "generation is str")],
    ids=["reference-text", "list", "generation-text"])
@pytest.mark.parametrize("command", ["up", "status", "destroy"])
def test_a_damaged_state_entry_is_named_and_can_be_forgotten(tmp_path, damage, why, command):
    import sqlite3

    (tmp_path / "cluster.yml").write_text(TWO_WEB)
    converge("up", cwd=tmp_path, check=True)
    with sqlite3.connect(tmp_path / ".provisioning" / "state.db") as db:
        db.execute(f"UPDATE entries SET {damage} WHERE kind = 'machine' AND name = 'web-1'")
    db.close()
    result = converge(command, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"damaged machine entry 'web-1': {why}" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    converge("state", "rm", "web-1", cwd=tmp_path, check=True)
    assert "1 change" in converge("up", cwd=tmp_path, check=True).stdout  # web-1 adopted again


def test_a_state_file_with_a_damaged_schema_version_is_refused_unchanged(tmp_path):
    state = _made_with_schema_version(tmp_path, "abc")
    before = state.read_bytes()
    result = converge("up", cwd=tmp_path)
    assert result.returncode == 2 and "damaged schema version ('abc'" in result.stderr, \
        result.stderr
    assert state.read_bytes() == before


@pytest.mark.parametrize("document,expect", [
    ("[]", "not a provisioning state export"),
    ('{"format": "provisioning-state", "format_version": 1, "entries": "x"}',
     '"entries" must be a list'),
    ('{"format": "provisioning-state", "format_version": 1, "entries": [{"kind": "machine", '
     '"name": "web-1", "reference": {}, "generation": "two"}]}', "entries[0] (generation is str)"),
    ('{"format": "provisioning-state", "format_version": 1, "entries": [{"kind": "machine", '
     '"name": "web-1", "reference": "x"}]}', "entries[0] (reference is str)")],
    ids=["list", "entries-text", "generation-text", "reference-text"])
def test_a_state_import_of_a_bad_export_creates_no_state_file(tmp_path, document, expect):
    (tmp_path / "export.json").write_text(document)
    refused(tmp_path, TWO_WEB, "state", "import", "export.json", expect=expect)


@pytest.mark.parametrize("command", [("up",), ("up", "--why-run"), ("plan",), ("image", "build")],
                         ids=lambda c: "-".join(c))
@pytest.mark.parametrize("url", ["/dev/null/cloud", "cluster.yml/cloud", "cluster.yml"])
def test_a_fake_cloud_where_no_directory_can_be_made_is_refused_before_the_state_file(
        tmp_path, url, command):
    """Checked when the driver is built, before the state opens: no state file is left."""
    where = url if url.startswith("/") else f"{tmp_path}/{url}"
    refused(tmp_path, f'driver: "fake:{url}"\nimages:\n  base: {{from: fake-linux}}\n'
                      'machines:\n  web: {}\n', *command,
            expect=f"cannot use {where} as the fake cloud")


def test_a_hostile_template_in_an_image_step_is_refused_before_the_builder(tmp_path):
    refused(tmp_path, 'driver: "fake:./cloud"\nimages:\n  x:\n    from: fake-linux\n'
                      '    converge:\n      - command: {run: "echo {{ cycler.__init__ }}"}\n'
                      'machines:\n  web: {machine_options: {image: x}}\n', "up",
            expect="images.x.converge[0].command.run: [image x] template")


@pytest.mark.parametrize("args,expect", [(("apply", "deep.json"), "not a plan: JSON nested"),
                                         (("state", "import", "deep.json"),
                                          "not a state export: JSON nested")],
                         ids=["apply", "state-import"])
def test_json_nested_too_deeply_is_the_users_error(tmp_path, args, expect):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    refused(tmp_path, TWO_WEB, *args, expect=expect)


@pytest.mark.parametrize("args,expect", [
    (("state", "mv", "web-1", "../x"), "invalid machine name '../x'"),
    (("state", "mv", "web-1", "--to-cluster", "BAD NAME"), "invalid cluster name 'BAD NAME'"),
    (("state", "mv", "web-1"), "say where to")], ids=["name", "cluster", "nowhere"])
def test_a_bad_state_mv_creates_no_state_file(tmp_path, args, expect):
    refused(tmp_path, TWO_WEB, *args, expect=expect)


@pytest.mark.parametrize("args,code,expect", [
    (("stop",), 0, "nothing to stop"),
    (("destroy",), 0, "nothing to destroy"),
    (("sync", "web-1"), 1, "has not been created"),
    (("snapshot", "save", "web-1"), 1, "has not been created"),
    (("snapshot", "restore", "web-1"), 1, "has not been created"),
    (("snapshot", "list", "web-1"), 1, "has not been created"),
    (("state", "rm", "web-1"), 2, "is not in the state"),
    (("state", "mv", "web-1", "web-9"), 2, "is not in the state"),
    (("image", "list"), 0, "not built"),
    (("image", "destroy"), 0, "image destroy"),
], ids=lambda v: "-".join(v) if isinstance(v, tuple) else None)
def test_a_command_that_makes_no_machine_creates_no_state_file(tmp_path, args, code, expect):
    """Typed on a new project (a typo of a directory, a machine never made), a command that
    only acts on what the state holds says so and leaves no state file behind."""
    (tmp_path / "cluster.yml").write_text(TWO_WEB + 'images:\n  base: {from: fake-linux}\n')
    result = converge(*args, cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    assert expect in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]


@pytest.mark.parametrize("command", ["build", "list"])
def test_an_unknown_image_name_on_the_command_line_creates_no_state_file(tmp_path, command):
    refused(tmp_path, TWO_WEB + 'images:\n  base: {from: fake-linux}\n', "image", command,
            "bsae", expect="no image 'bsae' in this cluster file")


@pytest.mark.parametrize("suite", ["{excludes: [debian]}", "{includes: []}", "{machines: {}}"],
                         ids=["excludes-all", "includes-none", "no-groups"])
@pytest.mark.parametrize("command", [("up",), ("plan",)], ids=lambda c: c[0])
def test_a_suite_that_makes_no_machine_is_refused_before_the_state_file(tmp_path, suite,
                                                                        command):
    """It was ``up: 0 machines`` with exit 0 and a new state file, where ``machines: {}`` is
    ``no machines defined``."""
    refused(tmp_path, 'driver: "fake:"\nplatforms: {debian: {}}\nsuites: {web: %s}\n' % suite,
            *command, expect="suites.web")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
@pytest.mark.parametrize("args", [("apply",), ("state", "import")], ids=["apply", "state-import"])
def test_a_plan_or_export_that_is_a_device_or_fifo_is_refused_not_read_forever(tmp_path, target,
                                                                               args):
    """``apply /dev/zero`` and ``state import /dev/zero`` read without end (memory grows until
    the kernel kills the run); a FIFO nobody writes blocked them for ever."""
    os.mkfifo(tmp_path / "fifo")
    kind = "character device" if target == "/dev/zero" else "FIFO"
    refused(tmp_path, TWO_WEB, *args, target, expect=f"is a {kind}")


@pytest.mark.parametrize("command", ["up", "status", "destroy"])
def test_a_state_file_that_lost_its_entries_table_is_refused_unchanged(tmp_path, command):
    """``status`` said "unusable" (exit 1) while ``up`` silently made the table again: every
    machine the state recorded forgotten, made (or adopted) anew as if never created."""
    import sqlite3

    state = _made_with_schema_version(tmp_path, "2")
    with sqlite3.connect(state) as db:
        db.execute("DROP TABLE entries")
    db.close()
    before = state.read_bytes()
    result = converge(command, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "its table 'entries' is missing" in result.stderr and "Traceback" not in result.stderr
    assert state.read_bytes() == before


@pytest.mark.parametrize("link", [".provisioning", ".provisioning/state.db"])
def test_a_dangling_symlink_where_the_state_goes_is_named(tmp_path, link):
    """A ``.provisioning`` directory (or state file) that is a symbolic link to nothing was
    reported as "File exists" (exit 1): it is the project's own setting, named with its
    target (exit 2), and nothing is made through it."""
    target = tmp_path.parent / f"{tmp_path.name}-gone"
    if "/" in link:
        (tmp_path / ".provisioning").mkdir()
    os.symlink(target, tmp_path / link)
    result = refused(tmp_path, 'driver: "fake:./cloud"\nmachines:\n  web: {}\n', "up",
                     expect=f"{tmp_path / link} is a symbolic link to {target}")
    assert "--state" in result.stderr
    assert not target.exists()


@pytest.fixture
def immutable(tmp_path):
    """Make directories immutable (``chattr +i``): not writable even by root, like a read-only
    mount; undone at the end so the test directory can be removed."""
    import shutil
    import subprocess

    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs root and chattr (e2fsprogs) to make a directory unwritable for root")
    made = []

    def make(path):
        subprocess.run(["chattr", "+i", str(path)], check=True)
        made.append(path)
    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("case", ["unwritable-project", "unwritable-state-dir",
                                  "dangling-link-above", "file-in-the-way"])
def test_a_state_directory_that_cannot_be_made_is_a_config_error(tmp_path, immutable, case):
    """Each place where the state file cannot go is exit 2 naming the path and the fix
    (``--state``), found before anything is written; an unwritable directory was exit 1."""
    cloud = tmp_path.parent / f"{tmp_path.name}-cloud"
    cluster = f'driver: "fake:{cloud}"\nmachines:\n  web: {{}}\n'
    state = tmp_path / ".provisioning"
    if case == "unwritable-state-dir":
        state.mkdir()
        (tmp_path / "cluster.yml").write_text(cluster)
        immutable(state)
        expect = f"{state} is not writable"
    elif case == "unwritable-project":
        (tmp_path / "cluster.yml").write_text(cluster)
        immutable(tmp_path)
        expect = f"{tmp_path} is not writable"
    elif case == "dangling-link-above":
        os.symlink(tmp_path.parent / f"{tmp_path.name}-gone", state)
        cluster += "state: .provisioning/sub/state.db\n"
        expect = f"{state} is a symbolic link to"
    else:
        state.write_text("")
        expect = f"{state} is not a directory"
    result = refused(tmp_path, cluster, "up", expect=expect)
    assert "--state" in result.stderr and "state" in result.stderr
    assert not cloud.exists(), "a machine was made before the check"


@pytest.mark.parametrize("where", ["option", "option-zero", "environment", "provisioning.yml"])
def test_parallel_out_of_bounds_is_refused_naming_the_bound(tmp_path, where):
    """``--parallel 1000000000`` (or the same in the environment or provisioning.yml) ran with
    no upper bound; every way of setting it is exit 2 naming the range, nothing written."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web: {}\n')
    args, env = ["up"], {}
    if where == "option":
        args += ["--parallel", str(10**9)]
    elif where == "option-zero":
        args += ["--parallel", "0"]
    elif where == "environment":
        env["PROVISIONING_PARALLEL"] = str(10**9)
    else:
        (tmp_path / "provisioning.yml").write_text(f"parallel: {10**9}\n")
    before = _files(tmp_path)
    result = converge(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "256" in result.stderr, result.stderr
    assert "parallel" in result.stderr
    assert _files(tmp_path) == before
