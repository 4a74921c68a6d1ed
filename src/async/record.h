// The async call journal's records (docs/async.md). Pure code, no I/O: encode appends a
// record to a buffer, decode_segment reads a segment file's bytes back.
//
// A record is a 12-byte header, then its payload:
//   u8 type (1 accept, 2 done), u8[3] "FVJ", u32 payload length, u32 CRC-32 of the payload
// (all little endian). An accept record carries the whole call (the request as the function
// will see it and where its result goes); a done record only the call's sequence number.
// A crash can leave the last record of a segment half-written: decoding stops at the first
// record whose header, length or checksum is wrong and says so, and everything before it
// stands (a record is acknowledged only after it and everything before it were fsynced).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"

namespace faasvisor::async {

struct CallRecord {
  uint64_t seq = 0;             // unique in this state directory, increasing
  std::string id;               // X-Call-Id
  std::string function;         // the function's name
  std::string path = "/";       // after /async-function/NAME
  std::string query;
  std::string callback_url;     // empty: no callback
  std::vector<http::Header> headers;
  std::string body;
  uint64_t accepted_unix_ns = 0;

  // The bytes this call holds in memory, counted against the node's async memory limit.
  size_t footprint_bytes() const;
};

enum class RecordType : uint8_t { accept = 1, done = 2 };
inline constexpr size_t kRecordHeaderBytes = 12;

void encode_accept(std::string &out, const CallRecord &call);
void encode_done(std::string &out, uint64_t seq);

struct DecodedSegment {
  std::vector<CallRecord> accepted;  // in file order
  std::vector<uint64_t> done;        // sequence numbers marked done in this segment
  size_t good_bytes = 0;             // the records before the first bad one
  std::string damage;                // empty if the whole segment decoded; else what was wrong
};

DecodedSegment decode_segment(std::string_view bytes, uint32_t max_record_bytes);

}  // namespace faasvisor::async
