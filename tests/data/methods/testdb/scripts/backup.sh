#!/bin/sh
# not a manifest: the loader reads only *.yaml, *.yml and *.json
exit 0
