"""
Twisted's private names the suite uses as types only, for the type
checker: nothing here is imported when the suite runs.

  - `twisted.internet._sslverify.IOpenSSLTrustRoot`: what
    `ssl.trustRootFromCertificates` returns and `optionsForClientTLS`
    takes as `trustRoot`.
Public route, if Twisted offered one: `twisted.internet.ssl` exporting it.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

    __all__ = ["IOpenSSLTrustRoot"]
