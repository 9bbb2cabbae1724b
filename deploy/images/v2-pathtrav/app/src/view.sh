#!/bin/sh
# Prints a document of the store by its name.
name="$1"
cat "/app/data/docs/$name"
