"""The Flask receiver from Efí's documentation (seed 001), as integrators copy it.

Run directly (``python seed_app.py``: Flask's own server with the seed's SSL context) or under
gunicorn behind nginx (``gunicorn seed_app:app``). Paths come from the environment so the
benchmark can point it at its throwaway certificates.
"""

import json
import os
import ssl

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/", methods=["POST"])
def imprimir():
    response = {"status": 200}
    return jsonify(response)


@app.route("/pix", methods=["POST"])
def imprimirPix():
    imprime = print(request.json)
    data = request.json
    with open(os.environ.get("SEED_DATA", "data.txt"), "a") as outfile:
        outfile.write("\n")
        json.dump(data, outfile)
    return jsonify(imprime)


if __name__ == "__main__":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(os.environ["SEED_CLIENT_CA"])
    context.load_cert_chain(os.environ["SEED_CERT"], os.environ["SEED_KEY"])
    app.run(ssl_context=context, host="127.0.0.1", port=int(os.environ.get("SEED_PORT", "5000")))
