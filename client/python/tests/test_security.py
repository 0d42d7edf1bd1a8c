"""TLS, mutual TLS and bearer tokens, with certificates made by openssl at test time."""

import pytest
import torch

import attnserve
from conftest import ServerProcess, make_pki

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _call(client):
    x = torch.ones(1, 1, 2, 4)
    return client.flash_attention_score(x, x, x, head_num=1, input_layout="BNSD").attention_out


def test_tls_with_the_ca_and_a_server_name(pki):
    server = ServerProcess([f"--tls_cert={pki['server.pem']}", f"--tls_key={pki['server.key']}"],
                           probe=dict(root_certificates=pki["ca.pem"]))
    try:
        client = attnserve.connect(server.target, root_certificates=pki["ca.pem"], timeout=30)
        assert _call(client).shape == (1, 1, 2, 4)
        # Dialing the IP but checking the certificate's DNS name.
        named = attnserve.connect(server.target, root_certificates=open(pki["ca.pem"]).read(),
                                  server_name="attn.test", timeout=30)
        assert named.health() == "SERVING"
        # A plaintext client cannot talk to a TLS port; a wrong name fails the handshake.
        for bad in (attnserve.connect(server.target, timeout=5),
                    attnserve.connect(server.target, root_certificates=pki["ca.pem"],
                                      server_name="other.test", timeout=5)):
            with pytest.raises(attnserve.UnavailableError):
                _call(bad)
            bad.close()
        client.close()
        named.close()
    finally:
        server.close()


def test_mutual_tls(pki):
    server = ServerProcess([f"--tls_cert={pki['server.pem']}", f"--tls_key={pki['server.key']}",
                            f"--tls_client_ca={pki['ca.pem']}"],
                           probe=dict(root_certificates=pki["ca.pem"],
                                      private_key=pki["client.key"],
                                      certificate_chain=pki["client.pem"]))
    try:
        client = attnserve.connect(server.target, root_certificates=pki["ca.pem"],
                                   private_key=pki["client.key"],
                                   certificate_chain=pki["client.pem"], timeout=30)
        assert _call(client).shape == (1, 1, 2, 4)
        anonymous = attnserve.connect(server.target, root_certificates=pki["ca.pem"], timeout=5)
        with pytest.raises(attnserve.UnavailableError):
            _call(anonymous)
        with pytest.raises(ValueError):
            attnserve.connect(server.target, private_key=pki["client.key"])
        client.close()
        anonymous.close()
    finally:
        server.close()


def test_bearer_tokens(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    server = ServerProcess([f"--auth_token_file={tokens}"])
    try:
        assert _call(attnserve.connect(server.target, token=TOKEN)).shape == (1, 1, 2, 4)
        with pytest.raises(attnserve.UnauthenticatedError):
            _call(attnserve.connect(server.target))
        with pytest.raises(attnserve.UnauthenticatedError):
            _call(attnserve.connect(server.target, token="f" * 32))
        # Health needs no token (load balancers probe it).
        assert attnserve.connect(server.target).health() == "SERVING"
    finally:
        server.close()
