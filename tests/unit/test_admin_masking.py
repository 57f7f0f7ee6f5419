"""Buyers' credentials in the console (services/admin/masking.py): every secret-bearing field of
a delivery account masked, the mask sent back restoring the stored value in its own place, and a
mask with nothing stored refused."""

from __future__ import annotations

import base64
import copy
from typing import Any

import yaml

from services.admin import masking
from services.admin.masking import MASK
from shared.catalog.model import Catalog

ACCOUNT: dict[str, Any] = {
    "id": "bolt-auto",
    "client": "bolt",
    "lead_type": "auto",
    "price": "9.50",
    "delivery": {
        "method": "http",
        "url": "https://ann:url-pass-1@buyer.example/post?campaign=77&api_key=query-key-1&sig=s1gn4ture",
        "headers": {"X-Partner": "partner-key-1", "Content-Type": "application/json", "Accept": "*/*"},
        "body_template": '{"name": "$first_name", "token": "body-token-1", "password": "$password", "n": 5}',
        "auth": {"type": "basic", "username": "ann", "password": "basic-pass-1"},
        "mask_fields": ["sig"],
    },
}
SECRETS = ("url-pass-1", "query-key-1", "s1gn4ture", "partner-key-1", "body-token-1", "basic-pass-1")


def test_every_secret_is_masked_and_the_rest_is_shown() -> None:
    shown = masking.mask_account(ACCOUNT)
    text = str(shown)
    for secret in SECRETS:
        assert secret not in text
    delivery = shown["delivery"]
    assert delivery["url"] == f"https://ann:{MASK}@buyer.example/post?campaign=77&api_key={MASK}&sig={MASK}"
    assert delivery["headers"] == {"X-Partner": MASK, "Content-Type": "application/json", "Accept": "*/*"}
    # A placeholder is not a secret; a fixed value under a sensitive name is.
    assert delivery["body_template"] == f'{{"name": "$first_name", "token": "{MASK}", "password": "$password", "n": 5}}'
    assert delivery["auth"] == {"type": "basic", "username": "ann", "password": MASK}
    assert ACCOUNT["delivery"]["auth"]["password"] == "basic-pass-1"  # a copy, the original untouched


def test_the_mask_sent_back_keeps_every_stored_secret() -> None:
    entry = masking.mask_account(ACCOUNT)
    assert masking.restore_account(entry, ACCOUNT) == {}
    assert entry == ACCOUNT


def test_an_edit_beside_masks_keeps_them_in_their_places() -> None:
    entry = masking.mask_account(ACCOUNT)
    delivery = entry["delivery"]
    delivery["url"] = delivery["url"].replace("buyer.example/post", "new.example/v2").replace("77", "78")
    delivery["headers"] = {"x-partner": MASK, "X-New": "typed-new-value"}  # header names without case
    delivery["body_template"] = delivery["body_template"].replace("$first_name", "$last_name")
    assert masking.restore_account(entry, ACCOUNT) == {}
    assert delivery["url"] == "https://ann:url-pass-1@new.example/v2?campaign=78&api_key=query-key-1&sig=s1gn4ture"
    assert delivery["headers"] == {"x-partner": "partner-key-1", "X-New": "typed-new-value"}
    assert '"token": "body-token-1"' in delivery["body_template"] and "$last_name" in delivery["body_template"]


def test_a_new_value_replaces_the_stored_one() -> None:
    entry = masking.mask_account(ACCOUNT)
    entry["delivery"]["auth"]["password"] = "new-pass-2"
    entry["delivery"]["headers"]["X-Partner"] = "partner-key-2"
    assert masking.restore_account(entry, ACCOUNT) == {}
    assert entry["delivery"]["auth"]["password"] == "new-pass-2"
    assert entry["delivery"]["headers"]["X-Partner"] == "partner-key-2"


def test_a_mask_with_nothing_stored_is_refused_never_saved() -> None:
    new = copy.deepcopy(masking.mask_account(ACCOUNT))
    new["delivery"]["url"] += f"&token={MASK}"
    new["delivery"]["headers"]["X-Other"] = MASK
    errors = masking.restore_account(new, ACCOUNT)
    assert set(errors) == {"delivery.url", "delivery.headers"}
    assert "X-Other" in errors["delivery.headers"]
    # A new account has nothing to keep; bearer auth keeps nothing of basic auth.
    assert set(masking.restore_account(masking.mask_account(ACCOUNT), None)) == {
        "delivery.url",
        "delivery.headers",
        "delivery.body_template",
        "delivery.auth.password",
    }
    switched = masking.mask_account(ACCOUNT)
    switched["delivery"]["auth"] = {"type": "bearer", "token": MASK}
    assert "delivery.auth.token" in masking.restore_account(switched, ACCOUNT)


def test_a_whole_document_round_trips_through_its_masked_yaml() -> None:
    catalog = {"clients": [{"id": "bolt", "name": "Bolt"}], "delivery_accounts": [ACCOUNT]}
    document = Catalog.model_validate(
        {**catalog, "lead_types": [{"id": "auto", "name": "Auto", "fields": [{"name": "first_name"}]}]}
    ).model_dump(mode="json")
    text = masking.masked_yaml(document)
    for secret in SECRETS:
        assert secret not in text
    submitted = yaml.safe_load(text)
    assert masking.restore_document(submitted, document) == []
    assert submitted == document
    submitted = yaml.safe_load(text)
    submitted["delivery_accounts"][0]["id"] = "renamed"  # another account: nothing of it to keep
    assert masking.restore_document(submitted, document)[0].startswith("delivery_accounts[0] (renamed).delivery")


def test_logged_text_loses_every_value_the_account_holds() -> None:
    values = masking.account_secrets(ACCOUNT)
    basic = base64.b64encode(b"ann:basic-pass-1").decode()
    assert set(SECRETS) | {basic} <= set(values)
    logged = (
        "POST https://buyer.example/post?api_key=query-key-1\nIdempotency-Key: d1\nX-Partner: partner-key-1\n"
        f"X-Old: an-old-key\nAuthorization: Basic {basic}\nContent-Type: application/json\n\n"
        '{"token": "body-token-1", "name": "Ann"}'
    )
    shown = masking.mask_logged_request(masking.mask_values(logged, values))
    for secret in (*SECRETS, basic, "an-old-key"):
        assert secret not in shown
    assert "Idempotency-Key: d1" in shown and "Content-Type: application/json" in shown and '"name": "Ann"' in shown


def test_the_shell_refuses_a_console_download_holding_masks(tmp_path, capsys) -> None:
    from shared.cli import main

    catalog = {
        "lead_types": [{"id": "auto", "name": "Auto", "fields": [{"name": "first_name"}]}],
        "clients": [{"id": "bolt", "name": "Bolt"}],
        "delivery_accounts": [ACCOUNT],
    }
    document = Catalog.model_validate(catalog).model_dump(mode="json")
    downloaded = tmp_path / "catalog-v2.yaml"
    downloaded.write_text(masking.masked_yaml(document))
    assert main(["catalog", "check", str(downloaded)]) == 1
    refused = capsys.readouterr().err
    for where in ("delivery.url", "delivery.headers.X-Partner", "delivery.body_template", "delivery.auth.password"):
        assert f"delivery_accounts[0] (bolt-auto).{where}: holds the admin console's mask" in refused
    exported = tmp_path / "catalog.yaml"
    exported.write_text(yaml.safe_dump(document))
    assert main(["catalog", "check", str(exported)]) == 0
