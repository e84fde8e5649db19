"""litefly.host"""
