"""The Lua scripts of :class:`~sonora_cog.store.redis.RedisStore`: each multi-key change in one atomic step.

Redis runs a script without interleaving any other command, so a reader never sees a snapshot without
its index entry, or a live record missing from the set of live guilds. Keys are passed in ``KEYS``
(never built inside a script). Guild ids and snapshot ids are validated by the store before a script runs.

.. versionadded:: 0.2
"""

from __future__ import annotations

__all__ = (
    "APPEND_JOURNAL",
    "CAPPED_GET",
    "CAPPED_JOURNAL",
    "DELETE_LIVE",
    "DELETE_SNAPSHOTS",
    "LEASE_ACQUIRE",
    "LEASE_RELEASE",
    "PUT_LIVE",
    "QUARANTINE_LIVE",
    "REPLACE_LIVE",
    "REPLACE_SNAPSHOT",
    "SAVE_SNAPSHOT",
)

# A read that checks the size first: a value over the cap is never sent (nor allocated by the reader).
# KEYS: key   ARGV: cap   -> nil | the value | {size} when the value is larger than cap
CAPPED_GET = """
local size = redis.call('STRLEN', KEYS[1])
if size > tonumber(ARGV[1]) then return {size} end
return redis.call('GET', KEYS[1])
"""

# A journal is read whole only when its entries together fit the cap.
# KEYS: journal   ARGV: cap   -> {0, entry...} | {-1, size} when over the cap
CAPPED_JOURNAL = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local total = 0
for _, item in ipairs(items) do total = total + #item + 1 end
if total > tonumber(ARGV[1]) then return {-1, total} end
table.insert(items, 1, 0)
return items
"""

# An append that keeps the journal under the cap and its name in the set of journals.
# KEYS: journal, journal-set   ARGV: cap, name, size of the new entries, entries...  -> 1 | {-1, size}
APPEND_JOURNAL = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local total = tonumber(ARGV[3])
for _, item in ipairs(items) do total = total + #item + 1 end
if total > tonumber(ARGV[1]) then return {-1, total} end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

# A live write is fenced by the guild's lease: when another owner holds it, nothing is written.
# KEYS: live, live-set, lease   ARGV: data, guild, owner ('' = not fenced)   -> {1, ''} | {0, holder}
PUT_LIVE = """
if ARGV[3] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[3] then return {0, holder} end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return {1, ''}
"""

# KEYS: live, live-set, lease   ARGV: guild, owner   -> {deleted 0|1, ''} | {-1, holder}
DELETE_LIVE = """
if ARGV[2] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then return {-1, holder} end
end
local deleted = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return {deleted, ''}
"""

# KEYS: live, live-set, quarantine target, quarantine notes   ARGV: guild, note   -> 1 moved | 0 none
QUARANTINE_LIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], KEYS[3], ARGV[2])
return 1
"""

# Snapshots are immutable: an existing id is refused. A retry (ARGV[6] = '1') of a write whose first
# attempt reached Redis before the connection broke finds exactly its own bytes there: that is success.
# KEYS: record, index, meta, guild-set   ARGV: data, created_at, id, meta json, guild, retry '0'|'1'
#   -> 1 stored | 2 identical record already there (retry only) | 0 the id is taken
SAVE_SNAPSHOT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  if ARGV[6] == '1' and existing == ARGV[1] then return 2 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
return 1
"""

# KEYS: index, meta, guild-set, record 1 .. record n   ARGV: guild, id 1 .. id n   -> deleted ids
DELETE_SNAPSHOTS = """
local deleted = {}
for i = 4, #KEYS do
  local id = ARGV[i - 2]
  if redis.call('DEL', KEYS[i]) == 1 then table.insert(deleted, id) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return deleted
"""

# KEYS: live   ARGV: data   -> 1 replaced | 0 missing
# ARGV[2]: the SHA-1 hex of the value the caller read ('' = replace whatever is there): compare-and-replace.
REPLACE_LIVE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if ARGV[2] ~= '' and redis.sha1hex(current) ~= ARGV[2] then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS: record, meta   ARGV: data, id, meta json, expected sha1 ('' = any)   -> 1 replaced | 0 missing | -1 changed
REPLACE_SNAPSHOT = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if ARGV[4] ~= '' and redis.sha1hex(current) ~= ARGV[4] then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# Take the lease when free, extend it when ours.
# KEYS: lease   ARGV: owner, ttl ms   -> {2 taken | 1 extended | 0 held by another, holder, ttl ms left}
LEASE_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {2, ARGV[1], tonumber(ARGV[2])}
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, holder, tonumber(ARGV[2])}
end
return {0, holder, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lease   ARGV: owner   -> 1 released | 0 not ours
LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
