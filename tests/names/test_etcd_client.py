"""The etcd client's connections: Twisted's Agent through public API, and quiet."""

import json

from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer
from zope.interface.verify import verifyObject

from suite.names.etcd import CONNECT_TIMEOUT, EtcdClient
from suite.net.web_client import QuietEndpoints
from tests.helpers import captured_log


@implementer(IStreamClientEndpoint)
class RecordingEndpoint:
    """An endpoint that records how noisy each factory was when it was asked to connect it."""

    def __init__(self):
        self.noisy = []

    def connect(self, protocolFactory):
        self.noisy.append(protocolFactory.noisy)
        return defer.succeed(Protocol())


class EndpointTests(SynchronousTestCase):
    def endpoint(self, url: bytes):
        return QuietEndpoints(
            reactor, BrowserLikePolicyForHTTPS(), CONNECT_TIMEOUT
        ).endpointForURI(URI.fromBytes(url))

    def test_the_endpoint_factory_and_its_endpoints_provide_their_interfaces(self):
        endpoints = QuietEndpoints(reactor, BrowserLikePolicyForHTTPS(), CONNECT_TIMEOUT)
        self.assertTrue(verifyObject(IAgentEndpointFactory, endpoints))
        for url in (b"http://127.0.0.1:2379/v3/kv/range", b"https://etcd.example:2379/"):
            self.assertTrue(verifyObject(IStreamClientEndpoint, self.endpoint(url)))

    def test_http_is_plain_tcp_to_the_urls_host_and_port(self):
        self.assertIsInstance(self.endpoint(b"http://127.0.0.1:2379/").endpoint, HostnameEndpoint)

    def test_https_is_tls_over_tcp(self):
        wrapped = self.endpoint(b"https://etcd.example:2379/").endpoint
        self.assertNotIsInstance(wrapped, HostnameEndpoint)
        self.assertTrue(verifyObject(IStreamClientEndpoint, wrapped))

    def test_another_scheme_is_not_supported(self):
        with self.assertRaises(SchemeNotSupported):
            self.endpoint(b"ftp://etcd.example/")

    def test_the_factory_is_made_quiet_before_it_connects(self):
        endpoint = self.endpoint(b"http://127.0.0.1:2379/")
        endpoint.endpoint = recording = RecordingEndpoint()
        endpoint.connect(Factory())
        self.assertEqual(recording.noisy, [False])


class Answer(resource.Resource):
    """etcd's JSON gateway, as far as one range read goes: every POST gets ANSWER."""

    isLeaf = True
    ANSWER = {"header": {"revision": "7"}, "count": "0"}

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.ANSWER).encode()


class QuietClientTests(TestCase):
    def setUp(self):
        site = server.Site(Answer())
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def test_requests_are_answered_and_connections_not_logged(self):
        lines = captured_log(self)
        client = EtcdClient(reactor, [self.url], timeout=5.0)
        try:
            for _ in range(2):
                answer = await client.call("/v3/kv/range", {"key": "a"})
                self.assertEqual(answer, Answer.ANSWER)
        finally:
            await client.close()
        self.assertEqual([line for line in lines if "factory" in line.lower()], [])
