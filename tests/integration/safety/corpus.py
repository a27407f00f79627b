"""The bad-input corpus: cluster files, URLs, keys, state files, templates, environment and CLI
flags, as a careless or hostile user would give them. Each case is data: the files to lay out
in an empty directory, the ``converge`` arguments, the environment. ``test_corpus.py`` checks
every one for a typed error, exit status 2, no traceback, one screen, nothing changed on disk.

File values: text (str), raw bytes, or a tuple: ("dir",), ("fifo",), ("symlink", TARGET),
("mode", TEXT, MODE), ("size", BYTES) for a sparse file of that size.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Case(NamedTuple):
    id: str
    files: dict[str, Any]
    args: tuple[str, ...] = ("up",)
    env: dict[str, str] = {}
    #: first bring the machine up with these files (so why-run renders templates against it)
    prepare: dict[str, Any] | None = None


FAKE = 'driver: "fake:"\n'
WEB = "machines: {web: {}}\n"


def _cluster(text: str) -> dict[str, Any]:
    return {"cluster.yml": text}


def _machine(body: str) -> dict[str, Any]:
    return _cluster(FAKE + f"machines: {{web: {body}}}\n")


# -- cluster files: shape and keys ----------------------------------------------------------
CLUSTER_TEXT = {
    "yaml-syntax": "machines:\n  web: {\n",
    "unquoted-url": "driver: fake:\nmachines: {web: {}}\n",
    "empty": "",
    "only-comment": "# nothing\n",
    "list-top": "- web\n- db\n",
    "scalar-top": "hello\n",
    "unknown-top-key": FAKE + "machnies: {}\n" + WEB,
    "machines-missing": FAKE,
    "machines-list": FAKE + "machines: [web]\n",
    "machines-empty": FAKE + "machines: {}\n",
    "machines-null": FAKE + "machines:\n",
    "machine-int": FAKE + "machines: {web: 3}\n",
    "machine-list": FAKE + "machines: {web: [a]}\n",
    "name-upper": FAKE + "machines: {Web: {}}\n",
    "name-underscore": FAKE + "machines: {web_1: {}}\n",
    "name-space": FAKE + "machines: {'web 1': {}}\n",
    "name-dash-end": FAKE + "machines: {web-: {}}\n",
    "name-too-long": FAKE + "machines: {" + "a" * 61 + ": {}}\n",
    "name-int-key": FAKE + "machines: {1: {}}\n",
    "name-unicode": FAKE + "machines: {wéb: {}}\n",
    "name-newline": FAKE + 'machines: {"web\\nx": {}}\n',
    "count-string": FAKE + "machines: {web: {count: three}}\n",
    "count-zero": FAKE + "machines: {web: {count: 0}}\n",
    "count-negative": FAKE + "machines: {web: {count: -1}}\n",
    "count-huge": FAKE + "machines: {web: {count: 100000}}\n",
    "count-float": FAKE + "machines: {web: {count: 1.5}}\n",
    "count-bool": FAKE + "machines: {web: {count: true}}\n",
    "name-collision": FAKE + "machines: {web: {count: 2}, web-2: {}}\n",
    "unknown-machine-key": FAKE + "machines: {web: {convrege: []}}\n",
    "no-driver": WEB,
    "driver-int": "driver: 5\n" + WEB,
    "driver-list": "driver: [fake]\n" + WEB,
    "machine-options-list": FAKE + "machine_options: [a]\n" + WEB,
    "driver-options-list": FAKE + "driver_options: [a]\n" + WEB,
    "driver-options-inner-list": FAKE + 'driver_options: {"fake:": [a]}\n' + WEB,
    "key-paths-mapping": FAKE + "private_key_paths: {a: b}\n" + WEB,
    "private-keys-list": FAKE + "private_keys: [a]\n" + WEB,
    "state-int": FAKE + "state: 5\n" + WEB,
    "duplicate-top-key": FAKE + WEB + "machines: {db: {}}\n",
    "duplicate-machine": FAKE + "machines:\n  web: {}\n  web: {count: 2}\n",
    "duplicate-option": FAKE + "machines:\n  web:\n    machine_options:\n      size: small\n"
                               "      size: large\n",
    "deep-nesting": FAKE + "machines: {web: {machine_options: {transport: " + "[" * 20000
                    + "]" * 20000 + "}}}\n",
    "deep-block-nesting": FAKE + "machines:\n" + "".join("  " * i + f"k{i}:\n"
                                                       for i in range(1, 80)),
    "alias-bomb": FAKE + "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                  + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, "
                            f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                            f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                            for i in range(8)) + WEB,
    "python-tag": FAKE + "machines: {web: !!python/object/apply:os.system ['touch PWNED']}\n",
    "unknown-tag": FAKE + "machines: {web: !custom {}}\n",
    "tab-indent": FAKE + "machines:\n\tweb: {}\n",
    "merge-key-bad": FAKE + "machines:\n  web:\n    <<: 5\n",
    # machine options
    "option-unknown": FAKE + "machines: {web: {machine_options: {sise: small}}}\n",
    "option-choice": FAKE + "machines: {web: {machine_options: {size: huge}}}\n",
    "option-type": FAKE + "machines: {web: {machine_options: {size: 5}}}\n",
    "option-null-key": FAKE + "machines: {web: {machine_options: {null: 1}}}\n",
    "ready-delay-negative": FAKE + "machines: {web: {machine_options: {ready_delay: -5}}}\n",
    "ready-delay-nan": FAKE + "machines: {web: {machine_options: {ready_delay: .nan}}}\n",
    "ready-delay-inf": FAKE + "machines: {web: {machine_options: {ready_delay: .inf}}}\n",
    "top-option-typo": FAKE + "machine_options: {imag: x}\n" + WEB,
    # steps
    "converge-mapping": FAKE + "machines: {web: {converge: {file: {}}}}\n",
    "step-two-kinds": FAKE + "machines: {web: {converge: [{command: ls, directory: /x}]}}\n",
    "step-unknown": FAKE + "machines: {web: {converge: [{fiel: {path: /x}}]}}\n",
    "step-int": FAKE + "machines: {web: {converge: [5]}}\n",
    "file-no-path": FAKE + "machines: {web: {converge: [{file: {content: x}}]}}\n",
    "file-two-sources": FAKE + "machines: {web: {converge: [{file: {path: x, content: a, "
                               "source: b}}]}}\n",
    "file-mode-word": FAKE + "machines: {web: {converge: [{file: {path: x, content: a, "
                             "mode: rw-r--r--}}]}}\n",
    "file-mode-decimal": FAKE + "machines: {web: {converge: [{file: {path: x, content: a, "
                                "mode: 644}}]}}\n",
    "file-source-missing": FAKE + "machines: {web: {converge: [{file: {path: x, "
                                  "source: nothere.txt}}]}}\n",
    "command-typo": FAKE + 'machines: {web: {converge: [{command: {run: ls, unles: "true"}}]}}\n',
    "command-timeout-negative": FAKE + "machines: {web: {converge: [{command: {run: ls, "
                                       "timeout: -5}}]}}\n",
    "command-timeout-zero": FAKE + "machines: {web: {converge: [{command: {run: ls, "
                                   "timeout: 0}}]}}\n",
    "command-env-list": FAKE + "machines: {web: {converge: [{command: {run: ls, env: [A]}}]}}\n",
    "command-sudo-string": FAKE + 'machines: {web: {converge: [{command: {run: ls, '
                                  'sudo: "yes please"}}]}}\n',
    "script-missing": FAKE + "machines: {web: {converge: [{script: nothere.sh}]}}\n",
    "healthcheck-two": FAKE + 'machines: {web: {healthcheck: {tcp: "a:1", command: ls}}}\n',
    "healthcheck-url": FAKE + 'machines: {web: {healthcheck: {http: "localhost/x"}}}\n',
    "healthcheck-port": FAKE + 'machines: {web: {healthcheck: {tcp: "127.0.0.1:99999"}}}\n',
    "healthcheck-deadline": FAKE + "machines: {web: {healthcheck: {command: ls, deadline: -1}}}\n",
    "verify-int": FAKE + "machines: {web: {verify: [42]}}\n",
    "verify-missing-dir": FAKE + "machines: {web: {verify: [{pytest: nothere}]}}\n",
    # ssh transport options, all found before anything is registered
    "ssh-port-high": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: '
                     '{host: 127.0.0.1, port: 70000}}}}\n',
    "ssh-port-negative": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: '
                         '{host: 127.0.0.1, port: -1}}}}\n',
    "ssh-port-string": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: '
                       '{host: 127.0.0.1, port: "22"}}}}\n',
    "ssh-transport-typo": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: '
                          '{host: 127.0.0.1, usernme: root}}}}\n',
    "ssh-no-host": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: '
                   '{port: 22}}}}\n',
    "ssh-no-transport": 'driver: "ssh:"\nmachines: {web: {}}\n',
    "ssh-timeout-negative": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: '
                            '{host: 127.0.0.1, connect_timeout: -1}}}}\n',
    "ssh-ready-timeout-negative": 'driver: "ssh:"\nmachines: {web: {machine_options: '
                                  '{ready_timeout: -5, transport: {host: 127.0.0.1}}}}\n',
    "ssh-transport-list": 'driver: "ssh:"\nmachines: {web: {machine_options: {transport: [a]}}}\n',
}

# -- driver URLs ---------------------------------------------------------------------------
BAD_URLS = {
    "url-nul": "fake:\x00x", "url-newline": "fake:\nx", "url-trailing-newline": "fake:\n",
    "url-tab": "fake:\tx", "url-cr": "fake:x\r", "url-escape": "fake:\x1b[31m",
    "url-del": "fake:\x7f", "url-upper": "FAKE:", "url-space-scheme": "fa ke:",
    "url-empty": "", "url-blank": "   ", "url-digit-scheme": "1fake:", "url-unknown": "fak:",
    "url-unknown-far": "zzzz:", "url-underscore": "fa_ke:", "url-ssh-pool": "ssh:bad pool!",
    "url-colon-only": ":", "url-unicode-scheme": "fäke:", "url-libcloud-empty": "libcloud:",
    "url-libcloud-bogus": "libcloud:nosuchprovider:x",
}

# -- key files -----------------------------------------------------------------------------
KEYS_CLUSTER = FAKE + "private_keys: {k: ./k}\n" + WEB
SSH_KEY_CLUSTER = ('driver: "ssh:"\nprivate_keys: {k: ./k}\nmachines: {web: {machine_options: '
                   '{transport: {host: 127.0.0.1, key_name: k}}}}\n')
BAD_KEYS = {
    "key-missing": None, "key-directory": ("dir",), "key-fifo": ("fifo",),
    "key-dev-zero": ("symlink", "/dev/zero"), "key-dangling": ("symlink", "nothere"),
    "key-loop": ("symlink", "k"), "key-empty": ("mode", "", 0o600),
    "key-garbage": ("mode", "not a key\n", 0o600),
    "key-world-readable": ("mode", "KEY", 0o644), "key-group-readable": ("mode", "KEY", 0o640),
    "key-encrypted-no-passphrase": ("mode", "ENCRYPTED", 0o600),
    "key-huge": ("size", 2 * 1024 * 1024), "key-public": ("mode", "PUBLIC", 0o600),
    "key-binary": ("mode", b"\x00\xff" * 100, 0o600),
}

# -- state files -----------------------------------------------------------------------------
BAD_STATE = {
    "state-text-file": ({"victim": ("mode", "root:x:0:0::/root:/bin/sh\n", 0o644)}, "victim"),
    "state-symlink": ({"victim": ("mode", "root:x:0:0\n", 0o644), "link": ("symlink", "victim")},
                      "link"),
    "state-directory": ({"victim": ("dir",)}, "victim"),
    "state-fifo": ({"victim": ("fifo",)}, "victim"),
    "state-proc": ({}, "/proc/self/status"),
    "state-proc-dir": ({}, "/proc"),
    "state-dev-null": ({}, "/dev/null"),
    "state-sys": ({}, "/sys/kernel/new.db"),
    "state-parent-file": ({"victim": "x"}, "victim/state.db"),
    "state-grandparent-file": ({"victim": "x"}, "victim/a/b/state.db"),
    "state-foreign-sqlite": ({"victim": ("sqlite",)}, "victim"),
    "state-sqlite-url-foreign": ({"victim": ("sqlite",)}, "sqlite://victim"),
    "state-fake-header": ({"victim": ("mode", "SQLite format 3\x00" + "x" * 200, 0o644)},
                          "victim"),
    "state-empty-shared": ({"victim": ("mode", "", 0o644)}, "victim"),
    "state-unknown-scheme": ({}, "redis://localhost/0"),
    "state-nul": ({}, "state\x00.db"),
}

# -- templates (the machine exists; why-run renders them: the violation is found, nothing
# is written) ---------------------------------------------------------------------------
TEMPLATE_CLUSTER = FAKE + "machines: {web: {converge: [{file: {path: out, template: t.j2}}]}}\n"
BAD_TEMPLATES = {
    "tpl-globals": "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "tpl-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "tpl-range": "{% for i in range(10**9) %}x{% endfor %}",
    "tpl-nested-loops": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}"
                        "{% endfor %}",
    "tpl-repeat": "{{ 'x' * 10**9 }}",
    "tpl-center": "{{ 'x'|center(1000000000) }}",
    "tpl-format": "{{ '{:>999999999}'.format(1) }}",
    "tpl-percent": "{{ '%999999999d' % 1 }}",
    "tpl-doubling": "{% set x = 'ab' %}" + "{% set x = x ~ x %}" * 40 + "{{ x }}",
    "tpl-recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "tpl-power": "{{ 10**10**10 }}",
    "tpl-undefined": "{{ nothere }}",
    "tpl-syntax": "{{ machine.name ",
    "tpl-mutate": "{{ machine.options.update({'a': 1}) }}",
    "tpl-self": "{{ self.__init__.__globals__ }}",
    "tpl-not-utf8": b"\xff\xfe{{ x }}",
    "tpl-directory": ("dir",),
    "tpl-fifo": ("fifo",),
    "tpl-huge": ("size", 17 * 1024 * 1024),
    "tpl-missing": None,
}

#: templates that break the sandbox whatever the variables: refused before the first write even
#: for a machine that does not exist yet (rendered ahead of the run, see cluster/preflight.py)
NEW_MACHINE_TEMPLATES = ("tpl-globals", "tpl-subclasses", "tpl-range", "tpl-nested-loops",
                         "tpl-repeat", "tpl-center", "tpl-format", "tpl-percent", "tpl-doubling",
                         "tpl-recursion", "tpl-power", "tpl-mutate", "tpl-self")

# -- cloud host key settings (docs/ssh.md, "Cloud nodes") -----------------------------------------
CLOUD = ('driver: "libcloud:ec2:us-east-1"\nmachines: {web: {machine_options: '
         '{image: ami-12c6146b, size: t2.micro, %s}}}\n')
BAD_CLOUD = {
    "cloud-policy-unknown": "host_key_policy: sometimes",
    "cloud-policy-underscore": "host_key_policy: trust_first_use",
    "cloud-policy-tofu": "host_key_policy: tofu",
    "cloud-policy-int": "host_key_policy: 1",
    "cloud-policy-bool": "host_key_policy: false",
    "cloud-policy-list": "host_key_policy: [verify]",
    "cloud-init-string": "cloud_init: 'yes please'",
    "cloud-init-int": "cloud_init: 2",
    "cloud-init-typo": "cloud_inti: true",
    "cloud-host-key-int": "transport: {host_key: 5}",
    "cloud-transport-typo": "transport: {hostkey: 'ssh-ed25519 AAAA'}",
    "cloud-transport-port": "transport: {port: 70000}",
}

# -- environment and command-line flags ------------------------------------------------------
BAD_ENV = {
    "env-lock-ttl-negative": {"PROVISIONING_LOCK_TTL": "-1"},
    "env-lock-ttl-zero": {"PROVISIONING_LOCK_TTL": "0"},
    "env-lock-ttl-nan": {"PROVISIONING_LOCK_TTL": "nan"},
    "env-lock-ttl-word": {"PROVISIONING_LOCK_TTL": "soon"},
    "env-parallel-zero": {"PROVISIONING_PARALLEL": "0"},
    "env-parallel-word": {"PROVISIONING_PARALLEL": "many"},
    "env-parallel-negative": {"PROVISIONING_PARALLEL": "-3"},
    "env-state-directory": {"PROVISIONING_STATE": "/"},
    "env-config-missing": {"PROVISIONING_CONFIG": "nothere.yml"},
    "env-config-dev-zero": {"PROVISIONING_CONFIG": "/dev/zero"},
}

BAD_FLAGS = {
    "flag-parallel-zero": ("--parallel", "0", "up"),
    "flag-parallel-word": ("--parallel", "x", "up"),
    "flag-output-xml": ("--output", "xml", "up"),
    "flag-unknown-command": ("upp",),
    "flag-unknown-option": ("up", "--bogus"),
    "flag-file-missing": ("-f", "nothere.yml", "up"),
    "flag-file-directory": ("-f", ".", "up"),
    "flag-file-dev-zero": ("-f", "/dev/zero", "up"),
    "flag-file-fifo": ("-f", "pipe", "up"),
    "flag-exec-no-command": ("exec", "web"),
    "flag-exec-bad-timeout": ("exec", "web", "--timeout", "-1", "--", "true"),
    "flag-exec-unknown-option": ("exec", "web", "--sudoo", "--", "true"),
    "flag-state-empty-dir": ("--state", ".", "status"),
    "flag-file-nul": ("-f", "clu\x00ster.yml", "up"),
}


def cases() -> list[Case]:
    out: list[Case] = []
    for name, text in CLUSTER_TEXT.items():
        out.append(Case(f"cluster-{name}", _cluster(text)))
    for name, url in BAD_URLS.items():
        out.append(Case(name, {"cluster.yml": ("url", url)}))
    for name, key in BAD_KEYS.items():
        files: dict[str, Any] = {"cluster.yml": KEYS_CLUSTER}
        if key is not None:
            files["k"] = key
        out.append(Case(name, files))
        ssh_files = dict(files, **{"cluster.yml": SSH_KEY_CLUSTER})
        out.append(Case(f"ssh-{name}", ssh_files))
    for name, (files, state) in BAD_STATE.items():
        for command in (("up",), ("status",)):
            out.append(Case(f"{name}-{command[0]}", {"cluster.yml": FAKE + WEB, **files},
                            ("--state", state, *command)))
        out.append(Case(f"{name}-in-file", {"cluster.yml": ("state", state), **files}))
    for name, template in BAD_TEMPLATES.items():
        files = {"cluster.yml": TEMPLATE_CLUSTER}
        if template is not None:
            files["t.j2"] = template
        out.append(Case(name, files, ("up", "--why-run"),
                        prepare={"cluster.yml": TEMPLATE_CLUSTER, "t.j2": "fine\n"}))
    for name in NEW_MACHINE_TEMPLATES:
        out.append(Case(f"new-machine-{name}",
                        {"cluster.yml": TEMPLATE_CLUSTER, "t.j2": BAD_TEMPLATES[name]}))
    for name, option in BAD_CLOUD.items():
        out.append(Case(name, {"cluster.yml": CLOUD % option}))
        out.append(Case(f"{name}-why-run", {"cluster.yml": CLOUD % option}, ("up", "--why-run")))
    for name, env in BAD_ENV.items():
        out.append(Case(name, {"cluster.yml": FAKE + WEB}, ("up",), env))
    for name, args in BAD_FLAGS.items():
        out.append(Case(name, {"cluster.yml": FAKE + WEB, "pipe": ("fifo",)}, args))
    return out
