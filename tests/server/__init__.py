"""Tests of the data server (syngrpo serve), its plugins and transports."""
