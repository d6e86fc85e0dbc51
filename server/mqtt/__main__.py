"""``python -m runform.server.mqtt asyncapi`` prints docs/asyncapi.yaml."""
import sys

from ._asyncapi import asyncapi_yaml

if __name__ == "__main__":
    if sys.argv[1:] != ["asyncapi"]:
        print("usage: python -m runform.server.mqtt asyncapi > docs/asyncapi.yaml", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(asyncapi_yaml())
