"""litefly.boards"""
