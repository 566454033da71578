// UTF-8 stepping and the Python str character classes (whitespace, case) that templates rely on.
#include "server/jinja/unicode.h"

#include <utf8proc.h>

namespace tidal::jinja {
namespace {

// Invalid bytes map into the low-surrogate range the way Python's surrogateescape does, so
// append_utf8 can write them back as the original byte.
constexpr char32_t kEscapeBase = 0xDC00;

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

}  // namespace

char32_t next_code_point(std::string_view text, size_t& pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) {
    ++pos;
    return lead;
  }
  size_t length = 0;
  char32_t value = 0;
  char32_t minimum = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, value = lead & 0x1F, minimum = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, value = lead & 0x0F, minimum = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, value = lead & 0x07, minimum = 0x10000;
  }
  if (length == 0 || pos + length > text.size()) {
    ++pos;
    return kEscapeBase + lead;
  }
  for (size_t i = 1; i < length; ++i) {
    const auto b = static_cast<unsigned char>(text[pos + i]);
    if (!is_continuation(b)) {
      ++pos;
      return kEscapeBase + lead;
    }
    value = (value << 6) | (b & 0x3F);
  }
  if (value < minimum || value > 0x10FFFF) {
    ++pos;
    return kEscapeBase + lead;
  }
  pos += length;
  return value;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c >= kEscapeBase + 0x80 && c <= kEscapeBase + 0xFF) {
    out.push_back(static_cast<char>(c - kEscapeBase));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::vector<size_t> code_point_offsets(std::string_view text) {
  std::vector<size_t> offsets;
  offsets.reserve(text.size() + 1);
  size_t pos = 0;
  while (pos < text.size()) {
    offsets.push_back(pos);
    next_code_point(text, pos);
  }
  offsets.push_back(text.size());
  return offsets;
}

size_t code_point_count(std::string_view text) {
  size_t count = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    next_code_point(text, pos);
    ++count;
  }
  return count;
}

bool is_space(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x1C:
    case 0x1D:
    case 0x1E:
    case 0x1F:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool is_line_break(char32_t c) {
  switch (c) {
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x1C:
    case 0x1D:
    case 0x1E:
    case 0x85:
    case 0x2028:
    case 0x2029:
      return true;
    default:
      return false;
  }
}

namespace {
bool is_real_code_point(char32_t c) {
  return c <= 0x10FFFF && !(c >= kEscapeBase + 0x80 && c <= kEscapeBase + 0xFF);
}
}  // namespace

char32_t to_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (!is_real_code_point(c)) return c;
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (!is_real_code_point(c)) return c;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

char32_t to_title(char32_t c) {
  if (c < 0x80) return to_upper(c);
  if (!is_real_code_point(c)) return c;
  return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c)));
}

bool is_upper(char32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z';
  if (!is_real_code_point(c)) return false;
  return utf8proc_isupper(static_cast<utf8proc_int32_t>(c)) != 0;
}

bool is_lower(char32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z';
  if (!is_real_code_point(c)) return false;
  return utf8proc_islower(static_cast<utf8proc_int32_t>(c)) != 0;
}

bool is_cased_letter(char32_t c) {
  if (c < 0x80) return is_upper(c) || is_lower(c);
  if (!is_real_code_point(c)) return false;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL ||
         category == UTF8PROC_CATEGORY_LT;
}

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (!is_real_code_point(c)) return false;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
}

bool is_digit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  if (!is_real_code_point(c)) return false;
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
}

namespace {

// The common one-to-many mappings of Unicode's SpecialCasing.txt, which Python's str.upper and
// str.lower apply and utf8proc's one-to-one mapping lacks.
const char* full_upper(char32_t c) {
  switch (c) {
    case 0x00DF:
      return "SS";
    case 0x0149:
      return "\u02BCN";
    case 0xFB00:
      return "FF";
    case 0xFB01:
      return "FI";
    case 0xFB02:
      return "FL";
    case 0xFB03:
      return "FFI";
    case 0xFB04:
      return "FFL";
    case 0xFB05:
      return "ST";
    case 0xFB06:
      return "ST";
    default:
      return nullptr;
  }
}

}  // namespace

std::string upper(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    if (c >= 0xDF) {
      if (const char* expansion = full_upper(c)) {
        out += expansion;
        continue;
      }
    }
    append_utf8(out, to_upper(c));
  }
  return out;
}

std::string lower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t c = next_code_point(text, pos);
    if (c == 0x0130) {
      out += "i\u0307";  // İ lowers to i and a combining dot
      continue;
    }
    append_utf8(out, to_lower(c));
  }
  return out;
}

std::string_view strip(std::string_view text, const std::string* chars, bool left, bool right) {
  std::vector<char32_t> set;
  if (chars != nullptr) {
    size_t pos = 0;
    while (pos < chars->size()) set.push_back(next_code_point(*chars, pos));
  }
  auto strippable = [&](char32_t c) {
    if (chars == nullptr) return is_space(c);
    for (char32_t s : set) {
      if (s == c) return true;
    }
    return false;
  };
  size_t begin = 0;
  size_t end = text.size();
  if (left) {
    while (begin < end) {
      size_t next = begin;
      if (!strippable(next_code_point(text, next))) break;
      begin = next;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      for (int back = 0;
           back < 3 && start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80;
           ++back) {
        --start;
      }
      size_t probe = start;
      const char32_t c = next_code_point(text, probe);
      if (probe != end) {
        // The trailing bytes were not one well-formed character: step back a single byte.
        start = end - 1;
        probe = start;
        if (!strippable(next_code_point(text, probe))) break;
      } else if (!strippable(c)) {
        break;
      }
      end = start;
    }
  }
  return text.substr(begin, end - begin);
}

}  // namespace tidal::jinja
