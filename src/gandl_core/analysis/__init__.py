"""Downstream analysis on profile tables: profiles, evaluation, projection, dose-response, plots, report."""
