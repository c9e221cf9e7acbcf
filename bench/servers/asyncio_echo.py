"""
Reference: an asyncio Protocol echo; `--udp`: its DatagramProtocol echo;
`--uvloop`: on uvloop.
"""

import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, address):
        self.transport.sendto(data, address)


async def main(port):
    loop = asyncio.get_running_loop()
    if "--udp" in sys.argv:
        await loop.create_datagram_endpoint(DatagramEcho, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if "--uvloop" in sys.argv:
    import uvloop

    uvloop.install()
asyncio.run(main(int(sys.argv[1])))
