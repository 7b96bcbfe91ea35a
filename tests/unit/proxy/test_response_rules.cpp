#include <doctest/doctest.h>

#include "gateway/proxy/response_rules.hpp"

using namespace gw;

namespace {
AnswerEnd answer(unsigned status, std::string_view length = "", std::string_view te = "") {
  AnswerEnd end;
  end.status = status;
  end.content_length = length;
  end.transfer_encoding = te;
  end.keep_alive = true;
  return end;
}
}  // namespace

TEST_CASE("a connection with bytes past the answer is never pooled") {
  auto end = answer(200, "2");
  CHECK(reusable_after(end));
  end.bytes_left = true;
  CHECK_FALSE(reusable_after(end));
  end.bytes_left = false;
  end.keep_alive = false;
  CHECK_FALSE(reusable_after(end));
}

TEST_CASE("bodiless answers that announce a body end the connection") {
  auto head = answer(200, "512");
  head.head_request = true;
  CHECK_FALSE(reusable_after(head));
  head.content_length = "0";
  CHECK(reusable_after(head));
  head.content_length = "";
  CHECK(reusable_after(head));
  head.transfer_encoding = "chunked";
  CHECK_FALSE(reusable_after(head));
  for (unsigned status : {204u, 304u}) {
    CAPTURE(status);
    CHECK(reusable_after(answer(status)));
    CHECK(reusable_after(answer(status, "0")));
    CHECK_FALSE(reusable_after(answer(status, "10")));
    CHECK_FALSE(reusable_after(answer(status, "", "chunked")));
  }
  // A 200 to GET with a length is an ordinary answer.
  CHECK(reusable_after(answer(200, "10")));
  CHECK(reusable_after(answer(200, "", "chunked")));
}

TEST_CASE("answer heads the relay refuses (issue 13.12)") {
  CHECK(answer_head_problem(200, 0, "").empty());
  CHECK(answer_head_problem(200, 1, "chunked").empty());
  CHECK(answer_head_problem(200, 1, " Chunked ").empty());
  CHECK_FALSE(answer_head_problem(101, 0, "").empty());
  CHECK_FALSE(answer_head_problem(200, 1, "gzip, chunked").empty());
  CHECK_FALSE(answer_head_problem(200, 1, "gzip").empty());
  CHECK_FALSE(answer_head_problem(200, 2, "chunked").empty());
}
