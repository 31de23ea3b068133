"""A WSGI app for gunicorn: prints "REQ <method> <target>" for every request
gunicorn's parser hands it, reads the body, answers 200.
Run: gunicorn --chdir tests/backends -b 127.0.0.1:PORT wsgi_origin:app"""
import sys


def app(environ, start_response):
    target = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
    sys.stdout.write("REQ %s %s\n" % (environ["REQUEST_METHOD"], target))
    sys.stdout.flush()
    environ["wsgi.input"].read()
    body = b"gunicorn ok\n"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
