"""The merchant's application for the forwarding benchmark: answers 204 to every delivery."""

import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=204)


app = web.Application()
app.router.add_post("/events", receive)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
