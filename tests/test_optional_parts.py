"""What the package does without its optional parts: a transport extra that is not installed, and
the compiled extensions switched off (VCF_AGENT_NO_EXTENSIONS=1)."""

from __future__ import annotations

import sys

import pytest

from vcf_agent.bus import BusError, open_bus
from vcf_agent.compiled import EXTENSIONS, NO_EXTENSIONS_VARIABLE, compiled_module, extensions_in_use


@pytest.mark.parametrize(
    ("url", "dependency", "module", "extra"),
    [
        ("kafka://localhost:9092", "aiokafka", "vcf_agent.bus._kafka", "kafka"),
        ("iggy://iggy:iggy@localhost:8090", "apache_iggy", "vcf_agent.bus._iggy", "iggy"),
    ],
)
def test_a_bus_url_whose_extra_is_missing_names_the_extra(
    url: str, dependency: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as an absent package does.
    monkeypatch.setitem(sys.modules, dependency, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(BusError) as caught:
        open_bus(url)
    message = str(caught.value)
    assert "\n" not in message
    assert f"pip install 'vcf-analysis-agent[{extra}]'" in message
    assert dependency in message


def test_the_embedded_bus_needs_no_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setitem(sys.modules, "aiokafka", None)
    monkeypatch.setitem(sys.modules, "apache_iggy", None)
    assert open_bus(f"embedded://{tmp_path}/bus") is not None


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_no_extensions_selects_every_twin(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NO_EXTENSIONS_VARIABLE, value)
    assert all(compiled_module(name) is None for name in EXTENSIONS)
    assert extensions_in_use() == dict.fromkeys(EXTENSIONS, False)


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_extensions_are_used_when_built_and_not_switched_off(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NO_EXTENSIONS_VARIABLE, value)
    monkeypatch.setitem(sys.modules, "vcf_agent.analysis._local_wire", None)  # as if not built
    in_use = extensions_in_use()
    assert in_use["vcf_agent.analysis._local_wire"] is False
    for name in EXTENSIONS:
        if name != "vcf_agent.analysis._local_wire":
            try:
                __import__(name)
            except ImportError:
                continue  # not built on this machine
            assert in_use[name] is True
