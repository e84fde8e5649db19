"""litefly.sim"""
