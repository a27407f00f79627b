"""The ``libcloud:`` driver's option declarations (validation, ``describe``, CLI help, wizard)."""

from __future__ import annotations

from provisioning.driver.options import OptionField

__all__ = ["DRIVER_OPTION_FIELDS", "MACHINE_OPTION_FIELDS", "DEFAULT_KEY_NAME"]

DEFAULT_KEY_NAME = "provisioning"

DRIVER_OPTION_FIELDS = (
    OptionField("region", help="default region when the URL names none (EC2)"),
    OptionField("profile", help="AWS profile in ~/.aws/credentials (EC2)"),
    OptionField("key", secret=True, help="access key id / user name (prefer the config's "
                                          "credentials or the provider's env vars)"),
    OptionField("secret", secret=True, help="secret key / password: never in cluster files"),
    OptionField("token", secret=True, help="session token for temporary credentials (EC2)"),
    OptionField("endpoint", type="dict",
                help="API endpoint other than the provider's own: {host, port, secure, path} "
                     "(private clouds, gateways, local emulators)"),
    OptionField("signature_version", help="request signature version (EC2: '2' or '4')"),
    OptionField("driver_class",
                help="'module:Class' of a libcloud NodeDriver subclass used instead of "
                     "libcloud's own for this provider"),
    OptionField("driver_args", type="dict",
                help="extra (non-secret) arguments for the libcloud driver's constructor"),
    OptionField("extra_regions", type="list", default=[],
                help="region names to accept that this libcloud does not list yet"),
    OptionField("image_owners", type="list", default=["self", "amazon"],
                help="whose images describe() lists (EC2)"),
    OptionField("poll_interval", type="float", default=5.0,
                help="seconds between state polls while waiting"),
    OptionField("wait_timeout", type="float", default=600.0,
                help="seconds to wait for a node to run, stop or disappear"),
)
MACHINE_OPTION_FIELDS = (
    # no choices_from: describe() lists the usual images, but any image id the provider
    # knows is valid (marketplace and shared AMIs are not in that list)
    OptionField("image", required=True,
                help="image id (EC2: ami-...); `converge drivers describe` lists common ones"),
    OptionField("size", required=True, choices_from="sizes",
                help="size / instance type id (EC2: t3.micro)"),
    OptionField("location", choices_from="locations",
                help="location / availability zone (default: the provider picks)"),
    OptionField("key_name", default=DEFAULT_KEY_NAME,
                help="private key (keys.py name, generated when absent) whose public key is "
                     "imported as the node's key pair; also the default SSH key. Windows "
                     "(transport kind winrm): an RSA key, default 'provisioning-rsa', that "
                     "decrypts the node's Administrator password"),
    OptionField("key_pair", help="an existing provider key pair to use as is (instead of "
                                 "importing key_name; for Windows, key_name must then be its "
                                 "private key)"),
    OptionField("security_groups", type="list", default=[],
                help="security group names the node joins (they must exist)"),
    OptionField("open_ssh", type="bool", default=False,
                help="create or reuse security group ssh_security_group opening TCP 22"),
    OptionField("ssh_security_group", default="provisioning-ssh",
                help="name of the group open_ssh creates or reuses"),
    OptionField("ssh_cidr", default="0.0.0.0/0", help="who open_ssh lets in"),
    OptionField("subnet", help="subnet id to launch into (EC2 VPC)"),
    OptionField("userdata", help="userdata as a Jinja template (text, or file://PATH), "
                                 "rendered with name, machine_options, vars"),
    OptionField("userdata_vars", type="dict", default={}, help="variables for userdata"),
    OptionField("tags", type="dict", default={}, help="extra tags for the node"),
    OptionField("create_args", type="dict", default={},
                help="extra keyword arguments for libcloud's create_node (ex_...)"),
    OptionField("address", default="public",
                help="address SSH/WinRM uses: 'public', 'private' (VPN / peered networks), or a "
                     "host name or IP to use instead (NAT, port forward, bastion setups)"),
    OptionField("wait_for_ssh", type="bool", default=True,
                help="ready waits until SSH (or WinRM, for transport kind winrm) answers "
                     "(false: only until the node runs)"),
    OptionField("wait_timeout", type="float",
                help="seconds ready waits in all (default: the driver's wait_timeout)"),
    OptionField("cloud_init", type="bool", default=True,
                help="the image runs cloud-init: generate the node's SSH host key here, hand it "
                     "over in the userdata and pin it before the first connection"),
    OptionField("host_key_policy", default="verify", choices=("verify", "trust-first-use"),
                help="verify: the node's host key must be known before use (cloud_init, or the "
                     "fingerprints on its console); trust-first-use: else accept the first key "
                     "seen (reported in the event); see docs/ssh.md"),
    OptionField("transport", type="dict", default={},
                help="how to reach the machine: {kind: ssh (default) or winrm, username, "
                     "port, ...}; see docs/ssh.md and docs/windows.md"),
)
