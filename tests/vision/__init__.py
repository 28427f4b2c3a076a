"""Tests of the thelper-vision package."""
