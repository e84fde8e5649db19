"""litefly.hw"""
