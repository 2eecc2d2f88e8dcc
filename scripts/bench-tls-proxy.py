"""TLS in front of moto for scripts/bench-start.sh BENCH_TLS=1 (benchmarks only).

    python3 scripts/bench-tls-proxy.py LISTEN_PORT TARGET_PORT CERT.pem KEY.pem

Serves https://127.0.0.1:LISTEN_PORT and passes the bytes to http://127.0.0.1:TARGET_PORT,
so the agent's AWS calls go through TLS as on a real host (moto speaks plain HTTP).
"""
import asyncio, ssl, sys
listen, target = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    except Exception: pass
    finally:
        try: w.close()
        except Exception: pass
async def handle(cr, cw):
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", target)
    except Exception:
        cw.close(); return
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=ctx)
    async with srv: await srv.serve_forever()
asyncio.run(main())
