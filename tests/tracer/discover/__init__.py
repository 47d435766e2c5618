"""Tests of discover: finding providers in processes, argument specs."""
