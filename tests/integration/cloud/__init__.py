"""Tests of the libcloud: driver against a real moto EC2 server on 127.0.0.1."""
