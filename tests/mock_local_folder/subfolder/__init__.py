"""Subpackage of mock_local_folder."""
