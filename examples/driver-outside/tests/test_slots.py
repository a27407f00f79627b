"""What is particular to slots: a full pool, claims per store, profiles from a function."""

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.errors import ConfigError, ProviderError
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore


@pytest.fixture
def driver(tmp_path):
    url = f"slots:{tmp_path / 'pool'}"
    return driver_for_url(url, Config({"driver_options": {url: {"slots": 2}}},
                                      base_dir=str(tmp_path)))


def test_a_full_pool_says_how_to_fix_it(tmp_path, driver):
    store = SQLiteStore(tmp_path / "state.db")
    provisioner = Provisioner(store, config=driver.config, action_handler=RecordingActionHandler())
    provisioner.allocate(driver, "a")
    provisioner.allocate(driver, "b")
    with pytest.raises(ProviderError, match="no free slot.*raise the driver option 'slots'"):
        provisioner.allocate(driver, "c")
    provisioner.destroy("a", {}, driver)
    provisioner.allocate(driver, "c")
    assert sorted(c["name"] for c in driver.pool.claims().values()) == ["b", "c"]
    store.close()


def test_profiles_are_choices_from_the_driver(driver):
    info = driver.describe().to_dict()
    assert info["choices"]["profile"] == ["plain", "build"]
    assert not driver.validate_machine_options({"profile": "plain"}, where="m")


def test_slots_option_is_typed(tmp_path):
    url = f"slots:{tmp_path / 'pool'}"
    with pytest.raises(ConfigError, match="slots"):
        driver_for_url(url, Config({"driver_options": {url: {"slots": "many"}}},
                                   base_dir=str(tmp_path)))
