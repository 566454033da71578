// Safetensors reading, validation errors, sharded checkpoints and the writer's round trip.
#include "model/loader/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "model/loader/loader_test_util.h"
#include "model/loader/safetensors_writer.h"

namespace tidal {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class SafetensorsTest : public testing_util::ScratchDirTest {
 protected:
  // A file with exactly this header text and `data_size` zero bytes after it, for inputs the
  // writer would never produce.
  std::string write_raw(const std::string& name, const std::string& header, size_t data_size,
                        uint64_t claimed_header_size = 0) const {
    const uint64_t length = claimed_header_size != 0 ? claimed_header_size : header.size();
    std::string bytes(8, '\0');
    for (size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xffu);
    bytes += header;
    bytes.append(data_size, '\0');
    write_text(name, bytes);
    return path(name);
  }

  // Two small tensors (a: F32 [2, 3], b: BF16 [4]) written to `name`.
  static void add_pair(SafetensorsWriter& writer) {
    const std::vector<float> a = {1, 2, 3, 4, 5, 6};
    const std::vector<float> b = {0.5f, -1.0f, 2.0f, 256.0f};
    writer.add_floats("a", DType::kF32, {2, 3}, a);
    writer.add_floats("b", DType::kBF16, {4}, b);
  }
};

TEST_F(SafetensorsTest, MissingFileNamesThePath) {
  const std::string file = path("absent.safetensors");
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("cannot open")));
}

TEST_F(SafetensorsTest, MissingDirectoryNamesIt) {
  const std::string missing = path("no_such_model");
  EXPECT_THAT(testing_util::error_of([&] { Checkpoint::open(missing); }),
              AllOf(StartsWith(missing), HasSubstr("no such checkpoint directory")));
}

TEST_F(SafetensorsTest, FileShorterThanTheLengthFieldIsTruncated) {
  write_text("short.safetensors", "abcde");
  const std::string file = path("short.safetensors");
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("truncated: 5 bytes")));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondTheFileIsATruncatedHeader) {
  const std::string file = write_raw("cut.safetensors", "{}", 0, 4096);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("truncated header"), HasSubstr("4096")));
}

TEST_F(SafetensorsTest, HeaderThatIsNotJsonIsCorrupt) {
  const std::string file = write_raw("corrupt.safetensors", "{\"a\": {\"dtype\": ", 0);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("corrupt header")));
}

TEST_F(SafetensorsTest, HeaderThatIsNotAnObjectIsCorrupt) {
  const std::string file = write_raw("array.safetensors", "[1, 2]", 0);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("corrupt header"), HasSubstr("array")));
}

TEST_F(SafetensorsTest, DataOffsetsOutsideTheFile) {
  const std::string file =
      write_raw("outside.safetensors",
                R"({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}})", 16);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("tensor 'w'"), HasSubstr("[0, 400]"),
                    HasSubstr("outside the data area of 16 bytes")));
}

TEST_F(SafetensorsTest, DataOffsetsEndingBeforeTheyBegin) {
  const std::string file =
      write_raw("reversed.safetensors",
                R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 16);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("tensor 'w'"), HasSubstr("end before they begin")));
}

TEST_F(SafetensorsTest, OverlappingDataOffsets) {
  const std::string file =
      write_raw("overlap.safetensors",
                R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                16);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("'a' and 'b'"), HasSubstr("overlapping")));
}

TEST_F(SafetensorsTest, SizeNotMatchingDtypeTimesElements) {
  const std::string file =
      write_raw("size.safetensors",
                R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}})", 16);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("tensor 'w'"), HasSubstr("span 8 bytes"),
                    HasSubstr("F32 [2, 2] needs 16 bytes")));
}

TEST_F(SafetensorsTest, UnknownDtypeSizeIsCheckedToo) {
  // F8 tensors are refused on access, but their offsets must still be consistent.
  const std::string file = write_raw(
      "f8.safetensors", R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 8]}})", 8);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("F8_E4M3 [4] needs 4 bytes")));
}

TEST_F(SafetensorsTest, EntryMissingAField) {
  const std::string file =
      write_raw("noshape.safetensors", R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("tensor 'w'"), HasSubstr("no 'shape'")));
}

TEST_F(SafetensorsTest, EntryFieldOfTheWrongType) {
  const std::string file = write_raw(
      "types.safetensors", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("tensor 'w'"),
                    HasSubstr("'shape' must hold non-negative integers")));
  const std::string dtype_file = write_raw(
      "dtype.safetensors", R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", 4);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{dtype_file}; }),
              AllOf(StartsWith(dtype_file), HasSubstr("'dtype' is a number, not a string")));
  const std::string metadata_file = write_raw("meta.safetensors", R"({"__metadata__": [1]})", 0);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{metadata_file}; }),
              AllOf(StartsWith(metadata_file), HasSubstr("'__metadata__' is a array")));
}

TEST_F(SafetensorsTest, HugeShapeDoesNotOverflow) {
  const std::string file =
      write_raw("huge.safetensors",
                R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], )"
                R"("data_offsets": [0, 4]}})",
                4);
  EXPECT_THAT(testing_util::error_of([&] { SafetensorsFile{file}; }),
              AllOf(StartsWith(file), HasSubstr("larger than the file")));
}

TEST_F(SafetensorsTest, RoundTripKeepsValuesShapesAndDtypes) {
  // Exactly representable in all three dtypes, so every one must read back bit-exact.
  const std::vector<float> exact = {0.0f, -0.0f, 1.0f, -2.5f, 0.0078125f, 384.0f};
  // Needs rounding in 16-bit dtypes: checks that each dtype rounds to nearest even.
  const std::vector<float> inexact = {0.1f, -3.14159f, 1.0e-3f};
  for (const DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const std::string name = cat("round_", dtype_name(dtype), ".safetensors");
    SafetensorsWriter writer;
    writer.set_metadata("format", "pt");
    writer.add_floats("exact", dtype, {2, 3}, exact);
    writer.add_floats("inexact", dtype, {3, 1}, inexact);
    writer.add_floats("scalar", dtype, {}, std::vector<float>{7.0f});
    writer.add_floats("empty", dtype, {0, 5}, std::vector<float>{});
    writer.write(path(name));

    const SafetensorsFile file(path(name));
    EXPECT_EQ(file.metadata().at("format"), "pt");
    ASSERT_EQ(file.tensors().size(), 4u);
    const TensorInfo& tensor = file.tensors().at("exact");
    EXPECT_EQ(tensor.dtype, dtype);
    EXPECT_EQ(tensor.dtype_name, dtype_name(dtype));
    EXPECT_THAT(tensor.shape, ElementsAre(2, 3));
    EXPECT_EQ(tensor.num_elements(), 6);
    EXPECT_EQ(tensor.data.size(), 6 * dtype_size(dtype));
    EXPECT_EQ(tensor.file, path(name));
    EXPECT_EQ(decode_floats(tensor), exact);

    const std::vector<float> read_back = decode_floats(file.tensors().at("inexact"));
    ASSERT_EQ(read_back.size(), inexact.size());
    for (size_t i = 0; i < inexact.size(); ++i) {
      float expected = inexact[i];
      if (dtype == DType::kBF16) expected = bf16_to_f32(f32_to_bf16(inexact[i]));
      if (dtype == DType::kF16) expected = f16_to_f32(f32_to_f16(inexact[i]));
      EXPECT_EQ(read_back[i], expected) << i;
    }
    EXPECT_THAT(file.tensors().at("scalar").shape, ElementsAre());
    EXPECT_EQ(decode_floats(file.tensors().at("scalar")), std::vector<float>{7.0f});
    EXPECT_EQ(file.tensors().at("empty").num_elements(), 0);
    EXPECT_TRUE(file.tensors().at("empty").data.empty());
  }
}

TEST_F(SafetensorsTest, WriterPadsTheHeaderSoDataStaysAligned) {
  SafetensorsWriter writer;
  writer.add_floats("odd_name_x", DType::kF32, {1}, std::vector<float>{1.0f});
  writer.write(path("model.safetensors"));
  const SafetensorsFile file(path("model.safetensors"));
  const auto address = reinterpret_cast<uintptr_t>(file.tensors().at("odd_name_x").data.data());
  EXPECT_EQ(address % 8, 0u);
}

TEST_F(SafetensorsTest, WriterRejectsInconsistentTensors) {
  SafetensorsWriter writer;
  EXPECT_THAT(testing_util::error_of([&] {
                writer.add_floats("w", DType::kF32, {2, 2}, std::vector<float>{1.0f});
              }),
              HasSubstr("1 values for 4 elements"));
  writer.add_floats("w", DType::kF32, {1}, std::vector<float>{1.0f});
  EXPECT_THAT(testing_util::error_of(
                  [&] { writer.add_floats("w", DType::kF32, {1}, std::vector<float>{1.0f}); }),
              HasSubstr("added twice"));
}

TEST_F(SafetensorsTest, SingleFileCheckpoint) {
  SafetensorsWriter writer;
  add_pair(writer);
  writer.write(path("model.safetensors"));

  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  EXPECT_EQ(checkpoint.directory(), dir_.string());
  EXPECT_THAT(checkpoint.names(), ElementsAre("a", "b"));
  EXPECT_TRUE(checkpoint.has("a"));
  EXPECT_FALSE(checkpoint.has("c"));
  EXPECT_EQ(checkpoint.find("c"), nullptr);
  const TensorInfo& a = checkpoint.tensor("a", {2, 3});
  EXPECT_EQ(decode_floats(a), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(checkpoint.tensor("b").dtype, DType::kBF16);
}

TEST_F(SafetensorsTest, TensorMissingFromTheCheckpoint) {
  SafetensorsWriter writer;
  add_pair(writer);
  writer.write(path("model.safetensors"));
  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  EXPECT_THAT(testing_util::error_of([&] { checkpoint.tensor("model.norm.weight"); }),
              AllOf(StartsWith(dir_.string()),
                    HasSubstr("tensor 'model.norm.weight' not found in the checkpoint")));
}

TEST_F(SafetensorsTest, WrongShapeNamesTensorFileAndBothShapes) {
  SafetensorsWriter writer;
  writer.add_floats("proj", DType::kBF16, {128, 64}, std::vector<float>(128 * 64, 0.25f));
  writer.write(path("model.safetensors"));
  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  EXPECT_THAT(testing_util::error_of([&] {
                checkpoint.tensor("proj", {64, 128});
              }),
              AllOf(StartsWith(path("model.safetensors")), HasSubstr("tensor 'proj'"),
                    HasSubstr("has shape [128, 64]"), HasSubstr("expected [64, 128]")));
  EXPECT_THAT(testing_util::error_of([&] {
                checkpoint.tensor("proj", {128, 64, 1});
              }),
              HasSubstr("expected [128, 64, 1]"));
}

TEST_F(SafetensorsTest, UnsupportedDtypeIsRecordedButRefusedOnAccess) {
  SafetensorsWriter writer;
  add_pair(writer);
  const std::vector<std::byte> scales(4, std::byte{0x38});
  writer.add_raw("w_scale", "F8_E5M2", {2, 2}, scales);
  writer.add_raw("mask", "BOOL", {4}, scales);
  writer.write(path("model.safetensors"));

  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  ASSERT_TRUE(checkpoint.has("w_scale"));
  const TensorInfo* raw = checkpoint.find("w_scale");
  ASSERT_NE(raw, nullptr);
  EXPECT_FALSE(raw->dtype.has_value());
  EXPECT_EQ(raw->dtype_name, "F8_E5M2");
  EXPECT_EQ(raw->data.size(), 4u);
  EXPECT_THAT(testing_util::error_of([&] { checkpoint.tensor("w_scale"); }),
              AllOf(StartsWith(path("model.safetensors")), HasSubstr("tensor 'w_scale'"),
                    HasSubstr("unsupported dtype F8_E5M2"), HasSubstr("BF16, F16, F32")));
  EXPECT_THAT(testing_util::error_of([&] { checkpoint.tensor("mask", {4}); }),
              HasSubstr("unsupported dtype BOOL"));
}

TEST_F(SafetensorsTest, Fp8E4M3IsReadAsIs) {
  SafetensorsWriter writer;
  const std::vector<std::byte> values{std::byte{0x38}, std::byte{0xb8}, std::byte{0x7e},
                                      std::byte{0x01}};
  writer.add_raw("w", "F8_E4M3", {2, 2}, values);
  writer.write(path("model.safetensors"));
  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  const TensorInfo& w = checkpoint.tensor("w", {2, 2});
  EXPECT_EQ(w.dtype, DType::kF8E4M3);
  // 1, -1, the largest finite (448) and the smallest subnormal (2^-9).
  const float expected[] = {1.0f, -1.0f, 448.0f, 0.001953125f};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(fp8_e4m3_to_f32(static_cast<uint8_t>(w.data[i])), expected[i]) << i;
    EXPECT_EQ(f32_to_fp8_e4m3(expected[i]), static_cast<uint8_t>(values[i])) << i;
  }
  EXPECT_EQ(f32_to_fp8_e4m3(1000.0f), 0x7e);  // saturates, never NaN
  EXPECT_EQ(f32_to_fp8_e4m3(1.0625f), 0x38);  // half a step above 1: to even (1)
  EXPECT_EQ(f32_to_fp8_e4m3(1.1875f), 0x3a);  // half a step above 1.125: to even (1.25)
}

TEST_F(SafetensorsTest, DirectoryWithoutSafetensors) {
  write_text("config.json", "{}");
  EXPECT_THAT(testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
              AllOf(StartsWith(dir_.string()),
                    HasSubstr("no model.safetensors or model.safetensors.index.json")));
}

TEST_F(SafetensorsTest, UnindexedSafetensorsFilesAreAllLoaded) {
  SafetensorsWriter first;
  first.add_floats("x", DType::kF32, {1}, std::vector<float>{1.0f});
  first.write(path("part-a.safetensors"));
  SafetensorsWriter second;
  second.add_floats("y", DType::kF32, {1}, std::vector<float>{2.0f});
  second.write(path("part-b.safetensors"));
  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  EXPECT_THAT(checkpoint.names(), ElementsAre("x", "y"));
  EXPECT_EQ(checkpoint.tensor("y").file, path("part-b.safetensors"));
}

TEST_F(SafetensorsTest, TensorInTwoFilesIsAnError) {
  SafetensorsWriter writer;
  writer.add_floats("x", DType::kF32, {1}, std::vector<float>{1.0f});
  writer.write(path("part-a.safetensors"));
  writer.write(path("part-b.safetensors"));
  EXPECT_THAT(testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
              AllOf(StartsWith(dir_.string()), HasSubstr("tensor 'x' appears in both"),
                    HasSubstr("part-a.safetensors"), HasSubstr("part-b.safetensors")));
}

class ShardedCheckpointTest : public SafetensorsTest {
 protected:
  static constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
  static constexpr const char* kShard2 = "model-00002-of-00002.safetensors";

  void SetUp() override {
    SafetensorsTest::SetUp();
    SafetensorsWriter first;
    first.add_floats("model.embed_tokens.weight", DType::kBF16, {4, 2},
                     std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8});
    first.add_floats("model.layers.0.input_layernorm.weight", DType::kF32, {2},
                     std::vector<float>{0.5f, 1.5f});
    first.write(path(kShard1));
    SafetensorsWriter second;
    second.add_floats("model.norm.weight", DType::kF16, {2}, std::vector<float>{-1.0f, 1.0f});
    second.add_floats("lm_head.weight", DType::kBF16, {4, 2}, std::vector<float>(8, 0.125f));
    second.write(path(kShard2));
  }

  void write_index(const std::string& weight_map) {
    write_text("model.safetensors.index.json",
               cat(R"({"metadata": {"total_size": 64}, "weight_map": )", weight_map, "}"));
  }
  std::string full_weight_map(const char* second_shard) const {
    return cat(R"({"model.embed_tokens.weight": ")", kShard1, R"(", )",
               R"("model.layers.0.input_layernorm.weight": ")", kShard1, R"(", )",
               R"("model.norm.weight": ")", second_shard, R"(", )", R"("lm_head.weight": ")",
               second_shard, R"("})");
  }
};

TEST_F(ShardedCheckpointTest, ResolvesEveryTensorToItsShard) {
  write_index(full_weight_map(kShard2));
  // A stray single-file checkpoint must lose to the index.
  SafetensorsWriter stray;
  stray.add_floats("stray", DType::kF32, {1}, std::vector<float>{0.0f});
  stray.write(path("model.safetensors"));

  const Checkpoint checkpoint = Checkpoint::open(dir_.string());
  EXPECT_THAT(checkpoint.names(),
              ElementsAre("lm_head.weight", "model.embed_tokens.weight",
                          "model.layers.0.input_layernorm.weight", "model.norm.weight"));
  EXPECT_EQ(checkpoint.tensor("model.embed_tokens.weight").file, path(kShard1));
  EXPECT_EQ(checkpoint.tensor("model.layers.0.input_layernorm.weight").file, path(kShard1));
  EXPECT_EQ(checkpoint.tensor("model.norm.weight").file, path(kShard2));
  EXPECT_EQ(checkpoint.tensor("lm_head.weight").file, path(kShard2));
  EXPECT_EQ(decode_floats(checkpoint.tensor("model.embed_tokens.weight", {4, 2})),
            (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(decode_floats(checkpoint.tensor("model.norm.weight", {2})),
            (std::vector<float>{-1.0f, 1.0f}));
  EXPECT_EQ(checkpoint.tensor("lm_head.weight").dtype, DType::kBF16);
}

TEST_F(ShardedCheckpointTest, IndexNamingAMissingShard) {
  write_index(full_weight_map("model-00003-of-00003.safetensors"));
  EXPECT_THAT(
      testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
      AllOf(StartsWith(path("model.safetensors.index.json")),
            HasSubstr("shard 'model-00003-of-00003.safetensors'"), HasSubstr("does not exist")));
}

TEST_F(ShardedCheckpointTest, IndexNamingATensorItsShardLacks) {
  // lm_head.weight is in shard 2, but the index places it in shard 1.
  write_index(cat(R"({"model.embed_tokens.weight": ")", kShard1, R"(", "lm_head.weight": ")",
                  kShard1, R"(", "model.norm.weight": ")", kShard2, R"("})"));
  EXPECT_THAT(
      testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
      AllOf(StartsWith(path("model.safetensors.index.json")), HasSubstr("tensor 'lm_head.weight'"),
            HasSubstr(kShard1), HasSubstr("does not contain it")));
}

TEST_F(ShardedCheckpointTest, IndexNamingATensorNoShardHas) {
  write_index(
      cat(R"({"model.embed_tokens.weight": ")", kShard1, R"(", "ghost": ")", kShard2, R"("})"));
  EXPECT_THAT(testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
              AllOf(HasSubstr("tensor 'ghost'"), HasSubstr(kShard2)));
}

TEST_F(ShardedCheckpointTest, CorruptIndex) {
  write_text("model.safetensors.index.json", R"({"weight_map": )");
  EXPECT_THAT(testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
              AllOf(StartsWith(path("model.safetensors.index.json")), HasSubstr("corrupt index")));
  write_text("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_THAT(testing_util::error_of([&] { Checkpoint::open(dir_.string()); }),
              HasSubstr("no 'weight_map'"));
}

TEST_F(ShardedCheckpointTest, ConvertedCopyHoldsEveryTensorInTheNewDtype) {
  write_index(full_weight_map(kShard2));
  const Checkpoint checkpoint = Checkpoint::open(dir_.string());

  std::filesystem::create_directory(dir_ / "f16");
  write_converted_checkpoint(checkpoint, DType::kF16, path("f16/model.safetensors"));
  const Checkpoint converted = Checkpoint::open(path("f16"));
  EXPECT_EQ(converted.names(), checkpoint.names());
  for (const std::string& name : checkpoint.names()) {
    SCOPED_TRACE(name);
    const TensorInfo& original = checkpoint.tensor(name);
    const TensorInfo& copy = converted.tensor(name, original.shape);
    EXPECT_EQ(copy.dtype, DType::kF16);
    EXPECT_EQ(decode_floats(copy), decode_floats(original));  // all values exact in F16
  }
  const SafetensorsFile file(path("f16/model.safetensors"));
  EXPECT_EQ(file.metadata().at("format"), "pt");

  // Non-float tensors pass through untouched when the checkpoint has them.
  SafetensorsWriter with_int;
  with_int.add_raw("scale", "I8", {3},
                   std::vector<std::byte>{std::byte{1}, std::byte{2}, std::byte{3}});
  with_int.add_floats("w", DType::kF32, {1}, std::vector<float>{0.1f});
  std::filesystem::create_directory(dir_ / "mixed");
  with_int.write(path("mixed/model.safetensors"));
  write_converted_checkpoint(Checkpoint::open(path("mixed")), DType::kBF16,
                             path("bf16.safetensors"));
  const SafetensorsFile bf16(path("bf16.safetensors"));
  EXPECT_EQ(bf16.tensors().at("scale").dtype_name, "I8");
  EXPECT_EQ(std::to_integer<int>(bf16.tensors().at("scale").data[2]), 3);
  EXPECT_EQ(decode_floats(bf16.tensors().at("w")),
            std::vector<float>{bf16_to_f32(f32_to_bf16(0.1f))});
}

}  // namespace
}  // namespace tidal
