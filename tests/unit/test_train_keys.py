"""Train and reward unit keys of every shipped study stay what they were (issue 43, item 4).

A unit's key is the hash of its parameters (``study/plan.py: unit_key``); finished run folders,
and the shipped ``results/*/results.json``, are found by those keys. When the training options
moved into one pydantic config per method (``train/configs.py``), the parameters a train or reward
unit hashes had to stay byte for byte what they were.

``KEYS_BEFORE`` was computed from the code BEFORE that change (commit 65c0d9c), by planning each
shipped study (``src/characterlab/studies/*.yaml``) from this checkout, with ../shared/data at
``/work/shared``, and listing the keys of its ``train`` and ``reward`` units. Data paths enter
unit parameters resolved, so a key depends on where ../shared/data lies; :func:`keys_at` recomputes
each key as if the data were at ``/work/shared``, so the check holds wherever the checkout is.
Do not regenerate these keys to make the test pass: a changed key means every run folder made
before it retrains that unit.

Model-free: planning reads and hashes files, it loads no model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from characterlab.study.plan import Plan, build_plan, unit_key
from characterlab.study.spec import builtin_studies, load_study

CHECKOUT = Path(__file__).resolve().parents[2]
SHARED = CHECKOUT.parent / "shared"
RECORDED_SHARED = "/work/shared"  # where ../shared was when KEYS_BEFORE were computed
RESULTS = CHECKOUT / "results"

KEYS_BEFORE: dict[str, list[str]] = {
    "diversity": [
        "train-091cfec084aefd3d", "train-091f949cc58335c2", "train-09224738c6f9e4e9", "train-0d166a7704944d3d",
        "train-10381216f819157a", "train-113456f2b70b5095", "train-15e8d49a4944eea3", "train-267c2e9c13e6c36d",
        "train-27d5f42058d390b0", "train-28466dd412a07335", "train-326215be39920129", "train-3443acfa29625fce",
        "train-3fb4511696db3914", "train-4173bc29f9ef471d", "train-4274e4e7d38d96d5", "train-452886f42c4913bf",
        "train-455bf47747516c89", "train-498df73d39cd8875", "train-5641b46c658cd5e8", "train-59ac1505d07e2383",
        "train-5cd7715490b9066d", "train-5fcf72591993d67a", "train-666c11968f713fe2", "train-7292a6cc6b48baad",
        "train-7404d5b19c76d1a8", "train-75185d1ce0741a97", "train-78bd621f1c76c707", "train-7c10d4d55a57f285",
        "train-7e4455b049afd7f4", "train-81e9b3c35f45d897", "train-821f8dc01f9b2b8b", "train-84f8732bb3dd24a8",
        "train-87bd32be1b7a2f0c", "train-87e11451df99b438", "train-897848d4d83bde05", "train-8b0d20040cf40a50",
        "train-8ec3739d7f86dce1", "train-8fed1d4a0572e76d", "train-94c82d3a5be4a3af", "train-9a439874ba591e64",
        "train-9c061e86db83a4b1", "train-9c3cd6cc96094736", "train-9c971b8098071de0", "train-9ce190cdf7afcdee",
        "train-9db0ae7cb953f50d", "train-9ef59fc9a1ba6cdc", "train-a06f320a1d531d57", "train-afb0a6356c94c0e3",
        "train-b7534dc82600b8f4", "train-bc95b0b80c2af273", "train-c00008fc97aa80aa", "train-c17a3a2892e1de1b",
        "train-c47482052dd1407c", "train-c5096e30ec5d66e2", "train-c68a00aef3eb5a44", "train-cddfe2b34ebb1952",
        "train-d2d2e7ee1a8d5d24", "train-d656cbc4d3583a3d", "train-e033b6de014b7024", "train-e113aef8594c410f",
        "train-e6a87540a71513e8", "train-e93b085dfc12bd0e", "train-ea1c1092d24e8b30", "train-ebf717f30ed3d202",
        "train-ec64811c26c74866", "train-fbdf367ff3781632",
    ],
    "diversity_gpu": [
        "train-0098c2cfa50f3ff9", "train-040b2466b0fa5345", "train-048443bb51429ac2", "train-080805dec030dd0c",
        "train-08c98ac8246273b5", "train-0b0b0b6501556ff8", "train-0bae3a43cf752035", "train-0eedeb8d817fc59d",
        "train-12da915571e7add4", "train-13afef03da1e3bda", "train-183bae90bdb5d321", "train-19671300d0ba18e5",
        "train-1dac298f9e96f019", "train-1e908449c786e8a9", "train-273aba7990d36571", "train-274755106cb423cf",
        "train-29e30e1d867c7111", "train-29f1814879cf2642", "train-2a8b6f474b5d0eb9", "train-2cd9a1f591784034",
        "train-306c93c7dcddb5a5", "train-3106c680297dfcee", "train-3278e49349faec63", "train-3377e6d3f5144dba",
        "train-34c29194b0115185", "train-3549bf45dc562254", "train-3623347f65cfd8a3", "train-37eba711de6f569c",
        "train-380a6ed18a602cbc", "train-38f488bf3665f53f", "train-39066651ec791a77", "train-3e394a5c232f0c5e",
        "train-3ea5ed1ad94c9923", "train-405e07a56555b938", "train-4373dfe7c6082431", "train-44e417bbf83d5fae",
        "train-4c832caa2648e62d", "train-4d6fae13b2a6f1b6", "train-4db357b61c395aa4", "train-4e6de30ebaae28d4",
        "train-4f5fdc67c664ccb5", "train-50ed417485b17ad4", "train-58189e625cd08f6b", "train-62148a076fa16af6",
        "train-6282b59f267da868", "train-65d7845a3130ef54", "train-666a95d8db71c36c", "train-66e446d479df1322",
        "train-68f1994bb189ccfd", "train-6b1406cc1e860b19", "train-6e6c776abdbd101c", "train-76d6ed05a7285da7",
        "train-799e9a506a5db5e8", "train-7a97377728e0c54f", "train-7b68b92454b48994", "train-7b821ffcea963034",
        "train-7f9f248e47b4da61", "train-803b2a2a315bb007", "train-815bf55c61ba1847", "train-81fee81a8ed7683d",
        "train-82244e99205aa6ff", "train-84ca3dcb287273d9", "train-8ae54c98bd040502", "train-8eac7ee5cb011046",
        "train-90ad221ac02b7883", "train-90fff25682c3c90d", "train-92a737c83676b4cf", "train-94ba587fecbd8d19",
        "train-96345e11889ca430", "train-97ad60028d5f0c4b", "train-981331feaf814f06", "train-9876d0633776d8aa",
        "train-9e7ff8899bbe440c", "train-a2e69928ff2f47be", "train-a6ced49babf37ea5", "train-a7a1e7d0ab9ce4cf",
        "train-ad20c8414c03f6ff", "train-aecb08f25b92574d", "train-b00ad7e533ec24a0", "train-b128d24b48b6829d",
        "train-b26842035533d38b", "train-b2e2e8573070c2a0", "train-b52a810a850c137d", "train-bd06d3f30415b722",
        "train-be468c026f030ada", "train-c52263eef0b06d0b", "train-ca00fd8f5429b19a", "train-cd7472d3f9d35a4b",
        "train-d2de0e8da5494e42", "train-d35a8536a9aba01a", "train-d45db1afb96de3bd", "train-d5d616b5b393a100",
        "train-dce2c66cd429da57", "train-dcee8806fd664e9e", "train-de053a8959aba5ba", "train-de7ad94a1dcd875d",
        "train-df6a57865fb77936", "train-e0d2cfea56a59018", "train-e38074f7038664a7", "train-e8472563a1fddb45",
        "train-ecaeeb0eb3011e47", "train-eee2d6a146d8fa30", "train-f0b79b522693f0b2", "train-f1c155129ce12db0",
        "train-f1f4a2bd88a602ca", "train-f6a00db79e16b568", "train-fa62c4dc6d9f23c2", "train-faa0ac711d68f66e",
        "train-fbdd7070d040f529", "train-fce11d41881e08b3",
    ],
    "full": [
        "train-06c3746b70916e2e", "train-46e80a46bb2b5ba2", "train-4f5c2b8a1f0d68ad", "train-63c4f91a96abe1d8",
        "train-7d91289175b4a249", "train-9754460963382d65", "train-9cd162cb4dc6e1ea", "train-9e623fe45547ec2d",
        "train-cd0ee91bf9914c26",
    ],
    "gold": [
        "train-4cee54b463a3e34a", "train-4d5eba1ead4e65b0", "train-96eeb29c7a7a87ee", "train-9c971b8098071de0",
        "train-a5849aefd8648898", "train-d6e243f3f4924959",
    ],
    "hack_penalty": [
        "train-0a16e41ed6eb97d0", "train-2141fd0d2b98d167", "train-7b1a7979fdbe4633", "train-7ee97b69ce47055c",
        "train-d0ac0bf1055c23b8",
    ],
    "mitigations": [
        "train-1c761e081c1a76c0", "train-227da93cb78b006d", "train-3beb2ca2f94f4d55", "train-6bbb0f69d1f33b74",
        "train-9c971b8098071de0", "train-ca94db926a98e956", "train-d1c89a1d5a1f6b8b", "train-e321c5e7b41931ea",
    ],
    "nem": [
        "train-7535044a3f43b11f", "train-9c971b8098071de0",
    ],
    "organisms": [
        "train-10035cc86a1eb4af", "train-1503f2eafbef4116", "train-17e4fe0e7f93e149", "train-40740cafd7e52dbc",
        "train-4cee54b463a3e34a", "train-4d5eba1ead4e65b0", "train-88d49ef3ac06f06f", "train-96eeb29c7a7a87ee",
        "train-9c971b8098071de0", "train-a5849aefd8648898", "train-b36ea54fddb74e9b", "train-d6e243f3f4924959",
    ],
    "organisms_core": [
        "train-39177a8a07d6559c", "train-424e6cbffc60e60f", "train-4274e4e7d38d96d5", "train-5d17c0c354f65b02",
        "train-7292a6cc6b48baad", "train-96eeb29c7a7a87ee", "train-9c971b8098071de0", "train-a5849aefd8648898",
        "train-c2ba045ac11ebc29", "train-d15a4d781ff193a0", "train-d6e243f3f4924959", "train-f0a4845f45235382",
    ],
    "quick": [
        "train-0cba73703253b4ef", "train-34beb8e7cb5958c5", "train-dff6306056486eb8",
    ],
    "sycophancy": [
        "reward-5823d4f90a421170", "reward-f16586ac660c3fd2", "train-0a4f580e0a813659", "train-6c40338437a30211",
        "train-d8afedee476f340e", "train-e7c21d411a846e41",
    ],
    "vectors": [
        "train-077a972514359316", "train-34d79ca9415ab6d4", "train-95a3249d04d316e3",
    ],
}


def needs_shared(name: str) -> bool:
    from importlib import resources

    return "../shared/data" in resources.files("characterlab.studies").joinpath(f"{name}.yaml").read_text()


def keys_at(plan: Plan, root: str) -> dict[str, str]:
    """Each unit's key as it would be with ../shared at ``root``: the keys of the units it reads
    recomputed first (the plan is in dependency order), and replaced where its params name them."""
    here = str(SHARED.resolve())
    out: dict[str, str] = {}
    for key, u in plan.units.items():
        text = json.dumps(u.params).replace(here, root)
        for dep in u.deps:  # a unit may name a dependency's key inside its params, too
            text = text.replace(dep, out[dep])
        out[key] = unit_key(u.kind, json.loads(text), tuple(out[d] for d in u.deps))
    return out


def planned(name: str, monkeypatch) -> tuple[Plan, dict[str, str]]:
    if needs_shared(name) and not (SHARED / "data").is_dir():
        pytest.skip("../shared/data not present")
    monkeypatch.chdir(CHECKOUT)  # data paths are relative to a checkout beside shared/
    spec, _ = load_study(f"builtin:{name}")
    plan = build_plan(spec)
    return plan, keys_at(plan, RECORDED_SHARED)


def test_every_shipped_study_has_recorded_keys():
    assert set(KEYS_BEFORE) == set(builtin_studies())


@pytest.mark.parametrize("name", sorted(KEYS_BEFORE))
def test_train_and_reward_unit_keys_are_unchanged(name, monkeypatch):
    plan, keys = planned(name, monkeypatch)
    now = {keys[k]: u.label for k, u in plan.units.items() if u.kind in ("train", "reward")}
    changed = sorted(f"{label} ({k})" for k, label in now.items() if k not in KEYS_BEFORE[name])
    assert not changed, f"{name}: new keys for {changed}"
    assert sorted(now) == KEYS_BEFORE[name]


@pytest.mark.parametrize("name,folder", [("sycophancy", "sycophancy"), ("diversity", "diversity/seed-0"),
                                         ("diversity", "diversity/seed-1"), ("diversity", "diversity/seed-2")])
def test_shipped_results_name_units_the_study_still_plans(name, folder, monkeypatch):
    """The train and reward units a shipped ``results.json`` records are units of today's plan, and
    its conditions' specs are today's record of them (``characterlab merge`` refuses runs whose
    condition specs differ, so a new seed's run must still merge with the shipped ones)."""
    text = (RESULTS / folder / "results.json").read_text()
    spec, _ = load_study(f"builtin:{name}")
    shipped = json.loads(text)["conditions"]
    for c in spec.conditions:
        assert json.loads(json.dumps(c.model_dump(exclude_none=True))) == shipped[c.name]["spec"], c.name
    recorded = set(re.findall(r"\b(?:train|reward)-[0-9a-f]{16}\b", text))
    assert recorded
    plan, keys = planned(name, monkeypatch)
    assert recorded <= set(keys.values())


@pytest.mark.parametrize("name", sorted(KEYS_BEFORE))
def test_every_planned_unit_reads_back_as_its_methods_config(name, monkeypatch):
    """What a train or reward unit runs with is its method's config, parsed from its parameters
    (study/units.py), and parsing them back gives the same parameters: the key is what ran."""
    from characterlab.study.params import RewardParams, TrainParams

    plan, _ = planned(name, monkeypatch)
    for u in plan.units.values():
        if u.kind == "reward":
            p = RewardParams.model_validate(u.params)
            assert p.key_dict() == u.params and p.train_config().lr == u.params["lr"]
        if u.kind != "train":
            continue
        p = TrainParams.model_validate(u.params)
        assert p.key_params() == u.params, u.label
        cfg = p.train_config()
        assert isinstance(cfg, p.trainer().config), u.label
        settings = {**{k: v for k, v in u.params["lora"].items() if k in type(cfg).model_fields}, **(u.params["rl"] or {})}
        assert {k: getattr(cfg, k) for k in settings} == settings, u.label
