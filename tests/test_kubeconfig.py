"""One context of a kubeconfig made self-contained (lamia_core.kubeconfig), as `lamia cluster add`
saves it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from lamia_core.errors import InvalidInput
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.kubeconfig import select_context
from lamia_sandbox.kube_emulator import KubeEmulator

CA = b"-----BEGIN CERTIFICATE-----\nMIIBprod-eu-ca\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIBdeployer\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIdeployer-key\n-----END EC PRIVATE KEY-----\n"


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def two_region_config(tmp_path: Path, eu_server: str = "https://api.prod-eu.example.com:6443") -> Path:
    """A kubeconfig as a release engineer has it: two clusters, certificates in files beside it."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "prod-eu-ca.crt").write_bytes(CA)
    (tmp_path / "certs" / "deployer.crt").write_bytes(CERT)
    (tmp_path / "certs" / "deployer.key").write_bytes(KEY)
    return write(tmp_path / "config", {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [
            {"name": "prod-eu", "cluster": {"server": eu_server,
                                            "certificate-authority": "certs/prod-eu-ca.crt"}},
            {"name": "prod-us", "cluster": {"server": "https://api.prod-us.example.com:6443",
                                            "certificate-authority-data": "dXMtY2E="}},
        ],
        "users": [
            {"name": "deployer-eu", "user": {"client-certificate": "certs/deployer.crt",
                                             "client-key": str(tmp_path / "certs" / "deployer.key")}},
            {"name": "deployer-us", "user": {"token": "us-secret-token"}},
        ],
        "contexts": [
            {"name": "prod-eu",
             "context": {"cluster": "prod-eu", "user": "deployer-eu", "namespace": "shop"}},
            {"name": "prod-us", "context": {"cluster": "prod-us", "user": "deployer-us"}},
        ],
        "current-context": "prod-us",
    })


def test_the_chosen_context_keeps_only_its_cluster_and_user_with_files_inlined(tmp_path: Path) -> None:
    path = two_region_config(tmp_path)
    selected = select_context([str(path)], "prod-eu")
    assert selected.context == "prod-eu"
    assert selected.server == "https://api.prod-eu.example.com:6443"
    config = selected.config
    assert config["current-context"] == "prod-eu"
    assert [c["name"] for c in config["contexts"]] == ["prod-eu"]
    (cluster,) = config["clusters"]
    assert cluster["name"] == "prod-eu"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == CA
    assert "certificate-authority" not in cluster["cluster"]
    (user,) = config["users"]
    assert user["name"] == "deployer-eu"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == CERT
    assert base64.b64decode(user["user"]["client-key-data"]) == KEY
    assert not {"client-certificate", "client-key"} & set(user["user"])
    # Nothing of the other context travels: not its cluster, not its credentials.
    assert "us-secret-token" not in yaml.safe_dump(config) and "prod-us" not in yaml.safe_dump(config)
    assert selected.notes == []


def test_without_a_context_the_current_one_is_taken(tmp_path: Path) -> None:
    selected = select_context([str(two_region_config(tmp_path))], None)
    assert selected.context == "prod-us"
    assert selected.config["users"] == [{"name": "deployer-us", "user": {"token": "us-secret-token"}}]


def test_files_merge_as_kubectl_merges_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write(tmp_path / "a" / "config", {
        "clusters": [{"name": "staging", "cluster": {"server": "https://staging-a:6443"}}],
        "users": [{"name": "ci", "user": {"token": "from-a"}}],
        "contexts": [{"name": "staging", "context": {"cluster": "staging", "user": "ci"}}],
    })
    second = write(tmp_path / "b" / "config", {
        "clusters": [{"name": "staging", "cluster": {"server": "https://staging-b:6443"}}],
        "users": [{"name": "ci", "user": {"token": "from-b"}}],
        "contexts": [{"name": "staging", "context": {"cluster": "staging", "user": "ci"}}],
        "current-context": "staging",
    })
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'missing'}:{second}")
    # The first file to define a name wins; the current context comes from the first that sets one;
    # a missing file in $KUBECONFIG is skipped, as kubectl skips it.
    selected = select_context(None, None)
    assert selected.server == "https://staging-a:6443"
    assert selected.config["users"][0]["user"] == {"token": "from-a"}


def test_a_token_file_and_an_exec_plugin_are_said_not_to_travel_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("eyJhbGciOiJSUzI1NiJ9.projected\n")
    path = write(tmp_path / "config", {
        "clusters": [{"name": "eks-prod", "cluster": {"server": "https://ABC.gr7.eu-west-1.eks.amazonaws.com"}}],
        "users": [
            {"name": "sa", "user": {"tokenFile": "token"}},
            {"name": "aws", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                              "command": "aws", "args": ["eks", "get-token"]}}},
        ],
        "contexts": [{"name": "sa", "context": {"cluster": "eks-prod", "user": "sa"}},
                     {"name": "aws", "context": {"cluster": "eks-prod", "user": "aws"}}],
    })
    by_token = select_context([str(path)], "sa")
    assert by_token.config["users"][0]["user"] == {"token": "eyJhbGciOiJSUzI1NiJ9.projected"}
    assert len(by_token.notes) == 1 and "rotates" in by_token.notes[0]
    by_exec = select_context([str(path)], "aws")
    assert by_exec.config["users"][0]["user"]["exec"]["command"] == "aws"
    (note,) = by_exec.notes
    assert "'aws'" in note and "where the flows run" in note


@pytest.mark.parametrize(("doc", "context", "fragment"), [
    ({"contexts": [{"name": "prod-eu", "context": {"cluster": "prod-eu", "user": "u"}}]}, "prod-ap",
     "has no context 'prod-ap' (its contexts: prod-eu)"),
    ({"contexts": [{"name": "prod-eu", "context": {"cluster": "prod-eu"}}]}, "prod-eu",
     "names cluster 'prod-eu', which no kubeconfig file defines"),
    ({"clusters": [{"name": "c", "cluster": {"server": "https://c"}}],
      "contexts": [{"name": "prod-eu", "context": {"cluster": "c", "user": "gone"}}]}, "prod-eu",
     "names user 'gone'"),
    ({"clusters": [{"name": "c", "cluster": {}}],
      "contexts": [{"name": "prod-eu", "context": {"cluster": "c"}}]}, "prod-eu", "has no server"),
    ({"clusters": [{"name": "c", "cluster": {"server": "https://c", "certificate-authority": "ca.crt"}}],
      "contexts": [{"name": "prod-eu", "context": {"cluster": "c"}}]}, "prod-eu",
     "cluster 'c' certificate-authority"),
    ({"clusters": [{"name": "c", "cluster": {"server": "https://c"}}],
      "contexts": [{"name": "prod-eu", "context": {"cluster": "c"}}]}, None, "sets no current-context"),
    ({"clusters": "everything"}, "prod-eu", "clusters must be a list"),
])
def test_bad_kubeconfigs_are_refused_naming_file_and_field(
    tmp_path: Path, doc: dict[str, Any], context: str | None, fragment: str
) -> None:
    path = write(tmp_path / "config", doc)
    with pytest.raises(InvalidInput) as err:
        select_context([str(path)], context)
    assert fragment in str(err.value)
    assert str(path) in str(err.value) or "ca.crt" in str(err.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"kubeconfig file .*/absent does not exist"):
        select_context([str(tmp_path / "absent")], "prod-eu")
    (tmp_path / "list").write_text("- a\n- b\n")
    with pytest.raises(InvalidInput, match="holds a list, not a kubeconfig mapping"):
        select_context([str(tmp_path / "list")], "prod-eu")
    (tmp_path / "broken").write_text("clusters: [unclosed\n")
    with pytest.raises(InvalidInput, match="is not YAML"):
        select_context([str(tmp_path / "broken")], "prod-eu")


def test_the_saved_content_reaches_the_cluster_once_the_files_are_gone(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    path = two_region_config(tmp_path, eu_server=kube_emulator.url)
    selected = select_context([str(path)], "prod-eu")
    for f in (tmp_path / "certs").iterdir():
        f.unlink()
    path.unlink()
    config = KubeConfig(config_data=selected.config, name="prod-eu")
    with KubeAdapter(config) as kube:
        assert kube.server == kube_emulator.url
        assert kube.server_version().startswith("v1.")
        kube.init_namespace("shop")
    assert kube_emulator.get_object("v1", "Namespace", None, "shop") is not None
