"""litefly.bitstreams"""
