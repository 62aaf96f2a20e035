"""What the built image holds besides the runtime: nothing of the build machine (no CA bundle,
pip.conf, proxy or cache, no path of the checkout) and no secret but the cluster's SSH key
pair, which is generated inside the build (README: the image, SSH)."""

from __future__ import annotations

import json
import socket

from conftest import REPO

from chainer_sagemaker_cdk.local.container import ContainerEngine


def test_the_image_holds_no_build_secret_or_machine_path(
    engine: ContainerEngine, image: str
) -> None:
    probe = engine(
        "run", "--rm", "--network", "none", image, "sh", "-c",
        "ls -d /etc/pip.conf /etc/ssl/build-ca.crt /run/secrets /root/.cache "
        "/opt/chainer-sagemaker-runtime 2>/dev/null; echo ---; env",
    )  # fmt: skip
    listed, _, env = probe.stdout.partition("---\n")
    assert listed.strip() == "", f"left in the image: {listed}"
    for word in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PROXY", str(REPO)):
        assert word not in env, word
    # The image's own config and history (the storage's GraphDriver paths are not the image's).
    config = engine("image", "inspect", "--format", "{{json .Config}}", image).stdout
    history = engine("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert any(e.startswith("PATH=") for e in json.loads(config)["Env"])
    assert str(REPO) not in config + history
    assert "build/podman" not in config + history


def test_the_ssh_key_pair_is_the_image_own_and_trusted_only_for_itself(
    engine: ContainerEngine, image: str
) -> None:
    out = engine(
        "run", "--rm", "--network", "none", image, "sh", "-c",
        "cat /root/.ssh/id_rsa.pub; echo ---; cat /root/.ssh/authorized_keys",
    ).stdout  # fmt: skip
    public, _, authorized = out.partition("---\n")
    assert public.startswith("ssh-rsa ")
    assert authorized.strip() == public.strip()  # only the image's own key gets in
    assert f"@{socket.gethostname()} " not in public + " "  # made in the build, not here
