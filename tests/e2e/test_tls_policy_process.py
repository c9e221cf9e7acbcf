"""
The TLS cipher policy as a client sees it: `openssl s_client` offering one
suite at a time to a running suite's `tls_listen`, with an RSA certificate
so that RSA key exchange and ECDHE-RSA suites are both possible and only
the policy decides.
"""

import subprocess

from tests.e2e.process import ProcessTestCase, require

LOCAL = "tcp:0:interface=127.0.0.1"
RSA_KEY_EXCHANGE = ("AES128-GCM-SHA256", "AES128-SHA256")
CBC = "ECDHE-RSA-AES128-SHA"
ECDHE_GCM = "ECDHE-RSA-AES128-GCM-SHA256"


class CipherPolicyTests(ProcessTestCase):
    def setUp(self):
        super().setUp()
        require("openssl")
        self.crt, self.key = self.directory / "server.crt", self.directory / "server.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(self.key),
                "-out",
                str(self.crt),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self, tls_lines=""):
        suite = self.start_suite(
            f"""
            [tls]
            certificate = "{self.crt}"
            private_key = "{self.key}"
            {tls_lines}
            [echo]
            listen = []
            tls_listen = ["{LOCAL}"]
            """,
            1,
        )
        return suite.port(f"echo tls_listen {LOCAL}")

    def negotiated(self, port, *options) -> str | None:
        """The suite s_client agreed on with OPTIONS, or None when the handshake failed."""
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *options],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            return None
        for line in result.stderr.splitlines():
            if line.startswith("Ciphersuite: "):
                return line.removeprefix("Ciphersuite: ")
        raise AssertionError(f"no Ciphersuite line:\n{result.stderr}")

    def test_intermediate_refuses_rsa_key_exchange_and_cbc(self):
        port = self.start()
        for refused in (*RSA_KEY_EXCHANGE, CBC):
            assert self.negotiated(port, "-tls1_2", "-cipher", refused) is None, refused
        assert self.negotiated(port, "-tls1_2", "-cipher", ECDHE_GCM) == ECDHE_GCM
        assert self.negotiated(port, "-tls1_2") == "ECDHE-RSA-AES128-GCM-SHA256"
        assert self.negotiated(port, "-tls1_3").startswith("TLS_")
        assert (
            self.negotiated(port, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")
            == "TLS_CHACHA20_POLY1305_SHA256"
        )

    def test_ciphers_overrides_the_policy(self):
        port = self.start(f'ciphers = "{RSA_KEY_EXCHANGE[0]}:{CBC}"')
        assert (
            self.negotiated(port, "-tls1_2", "-cipher", RSA_KEY_EXCHANGE[0])
            == (RSA_KEY_EXCHANGE[0])
        )
        assert self.negotiated(port, "-tls1_2", "-cipher", CBC) == CBC
        assert self.negotiated(port, "-tls1_2", "-cipher", ECDHE_GCM) is None
        assert self.negotiated(port, "-tls1_3").startswith("TLS_")

    def test_a_cipher_string_openssl_selects_nothing_from_is_one_config_line(self):
        suite = self.start_suite(
            """
            [tls]
            ciphers = "ECDHE-RSA-AES128-GCN-SHA256"
            [echo]
            listen = ["tcp:0:interface=127.0.0.1"]
            """,
            0,
        )
        assert suite.wait() != 0
        assert (
            '[tls] ciphers = "ECDHE-RSA-AES128-GCN-SHA256": '
            "OpenSSL selects no cipher suite from this cipher string"
        ) in suite.output, suite.output
        assert "Traceback" not in suite.output
